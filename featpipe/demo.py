"""`featpipe demo`: transfer learning shown end to end, offline, on a CPU, with nothing downloaded.

1. A small convolutional base is pretrained on a generated source task (`featpipe.pretrain`, 54 classes of
   textured shapes) and saved as a Keras model file, cached by everything that determines it.
2. The target task is written as an image folder: 6 classes the base never saw, 20 labelled images each
   (`featpipe.demo_data`).
3. The base is used through the ordinary model-file route (``--backbone base.keras:features``): every head
   on its cached features, and the end-to-end path (augmentation + frozen base, then fine-tuning).
4. The control: the same heads on a random-initialised copy of the same architecture (``--weights none``).
5. The report, whose verdict states what pretraining bought and what end-to-end costs.

With ``--backbone`` and/or ``--data`` the same comparison runs on the user's base and/or images.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from featpipe.experiment import Experiment, run_experiment

log = logging.getLogger(__name__)

# For --data without --backbone: the book's kind of base. Its ImageNet weights must be loadable (Keras'
# cache or the network): on the user's own images a random base would only report noise.
USER_DATA_BACKBONE = "keras:ResNet50"


def default_base_cache() -> Path:
    """Where pretrained demo bases are kept between demos: $XDG_CACHE_HOME/featpipe/bases."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "featpipe" / "bases"


def run_demo(out_dir: str | os.PathLike, data: str | None = None, backbone: str | None = None,
             epochs: int = 15, fine_tune_epochs: int = 2, progress: bool = True,
             base_cache: str | os.PathLike | None = None, control: bool = True, seed: int = 0,
             pretrain_config=None) -> dict:
    """Run the demo into `out_dir`; returns the report's paths plus the notes it carries.

    `base_cache`: where the pretrained demo base is cached (default: `default_base_cache()`).
    `control`: also train the heads on a random-initialised copy of the base.
    `seed`: one seed for everything random: the source images, the base's pretraining, the target
    images, the heads, the end-to-end run and the random copy. Another seed pretrains another base.
    `pretrain_config`: a `featpipe.pretrain.PretrainConfig` (tests use tiny ones); its seed is replaced.
    """
    from featpipe.pretrain import PretrainConfig
    from featpipe.report import write_report

    start = time.perf_counter()
    out = Path(out_dir)
    notes = []
    pretrain_config = replace(pretrain_config or PretrainConfig(), seed=seed)
    if backbone is None and data is None:
        base = _pretrained_base(base_cache, out, pretrain_config, notes)
        spec = base.spec
        record = base.record
        notes.append(
            f"Base: a small convolutional network pretrained by featpipe on a generated source task "
            f"({len(record['source_classes'])} classes of textured shapes, "
            f"{record['config']['per_class']} images each; source validation accuracy "
            f"{record['source_val_accuracy']:.1%}), saved as {base.path} and used as --backbone {spec}."
        )
    else:
        spec = backbone or USER_DATA_BACKBONE
    if data is None:
        data = _target_data(out, pretrain_config.image_size, seed)
        notes.append(_target_note())
    common = {"data": data, "backbones": [spec], "seed": seed, "epochs": epochs,
              "fine_tune_epochs": fine_tune_epochs, "cache_dir": str(out / "cache"), "runs_dir": str(out / "runs")}
    log.info("demo: heads and end-to-end on %s (%.0f s so far)", spec, time.perf_counter() - start)
    run_dirs, exp_notes = run_experiment(Experiment(**common, finetune=True, weights="default"), progress=progress)
    notes += exp_notes
    if control:
        log.info("demo: control, the same heads on a random-initialised copy of %s (%.0f s so far)",
                 spec, time.perf_counter() - start)
        control_dirs, _ = run_experiment(Experiment(**common, weights="none"), progress=progress)
        run_dirs += control_dirs
        notes.append("Control: the same heads on a random-initialised copy of the same architecture "
                     "(--weights none; pretrained = no in the tables): the difference is what pretraining bought.")
    paths = write_report(run_dirs, out / "report", title="featpipe demo", notes=notes)
    log.info("demo: done in %.0f s", time.perf_counter() - start)
    return {**paths, "notes": notes}


def _pretrained_base(base_cache, out: Path, config, notes: list[str]):
    """The cached demo base; when the base cache cannot be written (a read-only HOME or --base-cache), the
    base is pretrained into the demo's own folder instead, and the notes say it was not kept for later demos."""
    from featpipe import pretrain

    try:
        cache = Path(base_cache) if base_cache else default_base_cache()
    except RuntimeError as e:  # Path.home(): no HOME and no passwd entry
        cache, problem = None, f"no home folder for the default base cache: {e}"
    if cache is not None:
        try:
            return pretrain.pretrained_base(cache, config)
        except pretrain.BaseCacheUnwritable as e:
            problem = str(e)
    fallback = out / "base"
    message = f"{problem}: pretraining it into {fallback} for this demo only (set --base-cache to keep it)"
    log.warning("demo: %s", message)
    notes.append(f"The pretrained base was not cached for later demos: {message}.")
    return pretrain.pretrained_base(fallback, config)


def _target_note() -> str:
    from featpipe.demo_data import DEMO_CLASSES, DEMO_SPLIT_SIZES

    return (f"Target task: {len(DEMO_CLASSES)} classes of textured shapes that the source task never draws "
            f"(new shape/texture pairs), {DEMO_SPLIT_SIZES['train']} labelled training images per class, "
            f"{DEMO_SPLIT_SIZES['validation']} validation, {DEMO_SPLIT_SIZES['test']} test.")


def _target_data(out: Path, size: int, seed: int) -> str:
    from featpipe.demo_data import make_demo_dataset

    data = out / f"data-seed{seed}"
    if not data.is_dir():
        log.info("demo: writing the target task's images to %s", data)
        # Generated aside and renamed when complete: an interrupted demo never reuses half a dataset.
        partial = out / f"{data.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        make_demo_dataset(partial, size=size, seed=seed).rename(data)
    return str(data)
