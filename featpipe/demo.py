"""`featpipe demo`: the whole workflow on an embedded default that works offline on a CPU.

It generates a small texture dataset, extracts features with a small base, trains every head, runs a
short end-to-end fine-tune and writes the comparison report.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from featpipe.errors import FeatpipeError
from featpipe.experiment import Experiment, run_experiment

log = logging.getLogger(__name__)

# Keras ships ImageNet weights for it, and unlike the BatchNormalization-heavy mobile nets its
# random-initialised activations do not vanish (MobileNetV2's shrink to ~1e-11), so the offline
# fallback still gives the heads and the end-to-end path features to learn from. 64x64 keeps it quick.
DEMO_BACKBONE = "keras:ResNet50"
DEMO_IMAGE_SIZE = 64


def demo_weights(spec: str, image_size: int | None) -> str:
    """ImageNet weights when they can be had (Keras' cache in ~/.keras/models, or the network);
    otherwise a seeded random init, which the demo then states in its output and report."""
    from featpipe.backbones import load_backbone

    try:
        load_backbone(spec, weights="imagenet", image_size=image_size)
        return "imagenet"
    except FeatpipeError as e:
        log.warning("no pretrained weights for %s (%s): using random-initialised weights", spec, e)
        return "none"


def run_demo(out_dir: str | Path, data: str | None = None, backbone: str | None = None,
             epochs: int = 5, fine_tune_epochs: int = 2, progress: bool = True) -> dict:
    """Run the demo into `out_dir`; returns the report's paths plus the notes it carries."""
    from featpipe.demo_data import make_demo_dataset
    from featpipe.report import write_report

    out = Path(out_dir)
    if data is None:
        data = str(out / "data")
        if not Path(data).is_dir():
            # Generated aside and renamed when complete: an interrupted demo never reuses half a dataset.
            partial = out / "data.partial"
            shutil.rmtree(partial, ignore_errors=True)
            make_demo_dataset(partial).rename(data)
    # The user's own base must load as asked; only the embedded default may fall back to random weights.
    spec = backbone or DEMO_BACKBONE
    image_size = None if backbone else DEMO_IMAGE_SIZE
    weights = "default" if backbone else demo_weights(spec, image_size)
    exp = Experiment(data=data, backbones=[spec], finetune=True, weights=weights, image_size=image_size,
                     epochs=epochs, fine_tune_epochs=fine_tune_epochs, cache_dir=str(out / "cache"),
                     runs_dir=str(out / "runs"))
    run_dirs, notes = run_experiment(exp, progress=progress)
    paths = write_report(run_dirs, out / "report", title="featpipe demo", notes=notes)
    return {**paths, "notes": notes}
