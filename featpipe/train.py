"""Train heads on a feature cache: fit on train, select on validation, evaluate once on test, write run dirs.

Each head's run goes to ``<runs_dir>/<cache file stem>-<head>``. A finished run with the same cache key,
params and seed is reused (the comparison grid resumes this way); a finished run with other settings is
replaced only with `force`.

Features are loaded into memory when they fit under `max_memory` (default: half the machine's RAM);
otherwise the dense head, logistic regression and the linear SVM stream them from the cache in row chunks,
and the RBF SVM, which needs the whole matrix, refuses with how much memory it would need. The head is
fitted as a clone carrying the same `max_memory`, so its own decisions (the SVM's exact kernel or Nystroem
approximation, the linear heads' solver) use the same budget; they are recorded in run.json under "fit".
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import clone

from featpipe.choices import SPLITS
from featpipe.data import load_image_folder
from featpipe.errors import ArgumentError, FeatpipeError
from featpipe.heads.base import CachedSplit, Head, chunks, default_max_memory, format_bytes
from featpipe.metrics import classification_metrics
from featpipe.run_predictions import SplitPredictions, write_predictions
from featpipe.runs import (RUN_FILE, RunRecord, finish_run, is_complete, load_run, run_lock, save_model_files,
                           timing, verified_model_file)
from featpipe.store import FeatureCache, non_finite_rows

_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


@dataclass
class TrainResult:
    head: str
    run_dir: Path
    reused: bool
    metrics: dict
    fitted: Head | None = None  # the fitted clone (None when the run was reused)

    def summary(self) -> dict:
        timing = self.metrics["timing"]
        return {
            "head": self.head, "run_dir": str(self.run_dir), "reused": self.reused,
            "val_accuracy": self.metrics["validation"]["accuracy"], "test_accuracy": self.metrics["test"]["accuracy"],
            "seconds": round(timing["fit_seconds"] + timing["predict_seconds"], 3),
        }


def parse_size(text: str) -> int:
    """Bytes from ``4G``, ``512MiB``, ``1.5GB`` or a plain number (K/M/G/T are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise FeatpipeError(f"bad memory size {text!r}: expected e.g. 512M, 4G or a number of bytes")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " "))


def open_for_training(path: str | os.PathLike, check_data: bool = True) -> FeatureCache:
    """A cache fit to train on: finished, with train/validation/test, and (unless told not to check)
    still describing the dataset on disk. Close it (or use it as a context manager) when done."""
    cache = FeatureCache(path)
    try:
        missing = [s for s in SPLITS if s not in cache.splits]
        if "validation" in missing:
            raise FeatpipeError(
                f"{cache.path.name} has no validation split, which heads need to select their hyperparameters: "
                "re-run featpipe extract with --val-fraction 0.2 (or add a validation/ folder to the dataset)"
            )
        if missing:
            raise FeatpipeError(f"{cache.path.name} has no {' or '.join(missing)} split (it has {', '.join(cache.splits)})")
        if check_data:
            check_dataset(cache)
    except FeatpipeError:
        cache.close()
        raise
    return cache


def check_dataset(cache: FeatureCache) -> None:
    """Refuse features of a dataset that has changed since extraction (recomputed fingerprint differs)."""
    recorded = cache.attrs["dataset"]
    escape = "or pass --no-data-check to train on the cached features anyway"
    try:
        data = load_image_folder(recorded["root"], recorded["val_fraction"], recorded["seed"])
        fingerprint = data.fingerprint(recorded["content_hash"])
    except (FeatpipeError, OSError) as e:
        raise FeatpipeError(f"cannot check that {cache.path.name} still matches its dataset ({e}); {escape}") from None
    if fingerprint != recorded["fingerprint"]:
        raise FeatpipeError(
            f"the dataset at {recorded['root']} changed since {cache.path.name} was extracted (images added, "
            f"removed or modified): re-run featpipe extract to refresh the cache, {escape}"
        )


def run_dir_for(cache: FeatureCache, head: Head, runs_dir: str | os.PathLike) -> Path:
    return Path(runs_dir) / f"{cache.path.stem}-{head.name}"


def train_head(cache: FeatureCache, head: Head, runs_dir: str | os.PathLike = "runs", force: bool = False,
               max_memory: int | None = None) -> TrainResult:
    """Fit a clone of `head` on the cache's train split (selecting on validation), evaluate on test, write its
    run dir. `head` itself stays unfitted."""
    run_dir = run_dir_for(cache, head, runs_dir)
    if is_complete(run_dir) and not force:
        return _reuse(run_dir, cache, head)  # reading needs no lock (nor a writable runs dir)
    with run_lock(run_dir):
        if is_complete(run_dir) and not force:  # finished by another process since the check above
            return _reuse(run_dir, cache, head)
        return _train(cache, head, run_dir, max_memory)


def _train(cache: FeatureCache, head: Head, run_dir: Path, max_memory: int | None) -> TrainResult:
    budget = default_max_memory() if max_memory is None else max_memory
    head = clone(head).set_params(max_memory=budget)
    (run_dir / RUN_FILE).unlink(missing_ok=True)  # the old run is unfinished from here on
    features, streamed = _features(cache, head, budget)
    check_finite(cache, features)
    labels = {split: cache.labels(split) for split in SPLITS}
    _check_classes(cache, labels["train"])

    start = time.perf_counter()
    head.fit(features["train"], labels["train"], X_val=features["validation"], y_val=labels["validation"])
    fitted = time.perf_counter()
    proba = {split: head.predict_proba(features[split]) for split in ("validation", "test")}
    predicted = time.perf_counter()

    metrics = {
        **{split: classification_metrics(labels[split], proba[split], cache.classes) for split in proba},
        "selection": head.selection_,
        "timing": _timing(cache, fitted - start, predicted - fitted),
    }
    history = getattr(head, "history_", None)
    predictions = write_predictions(run_dir, {split: SplitPredictions(tuple(cache.paths(split)), labels[split],
                                                                      proba[split]) for split in proba})
    digests = save_model_files(run_dir, head.save)
    finish_run(run_dir, _run_info(cache, head, run_dir, streamed, predictions), metrics,
               None if history is None else {**history, "phases": [{"name": "head", "start_epoch": 0}]}, digests)
    return TrainResult(head.name, run_dir, False, metrics, head)


def _reuse(run_dir: Path, cache: FeatureCache, head: Head) -> TrainResult:
    loaded = load_run(run_dir)
    info = loaded["run"]
    wanted = {"head": head.name, "cache key": cache.key, "params": head.params, "seed": head.random_state}
    found = {"head": info.get("head"), "cache key": (info.get("cache") or {}).get("key"),
             "params": info.get("params"), "seed": info.get("seed")}
    differ = [key for key in wanted if wanted[key] != found[key]]
    if differ:
        raise FeatpipeError(
            f"{run_dir} holds a finished run with a different {', '.join(differ)}; "
            "pass --force to replace it (or --runs-dir to keep both)"
        )
    verified_model_file(run_dir, info)  # reuse only a model featpipe can show it wrote
    return TrainResult(head.name, run_dir, True, loaded["metrics"])


def _features(cache: FeatureCache, head: Head, max_memory: int) -> tuple[dict, bool]:
    """({split: features}, streamed): arrays in memory, or CachedSplits for a streaming head."""
    needed = int(sum(cache.nbytes_in_memory(split) for split in SPLITS) * head.memory_factor)
    if needed <= max_memory:
        return {split: cache.features(split) for split in SPLITS}, False
    if head.can_stream():
        return {split: CachedSplit.of(cache, split) for split in SPLITS}, True
    raise ArgumentError(
        f"head {head.name} needs the features in memory: about {format_bytes(needed)} for train + validation + "
        f"test, over {{max_memory}} {format_bytes(max_memory)}; raise {{max_memory}}, use {{head}} logreg, "
        "linear-svm or dense (they stream from the cache), or re-extract smaller features ({pooling} avg, "
        "{dtype} float16)", "max_memory", "head", "pooling", "dtype")


def check_finite(cache: FeatureCache, features: dict) -> None:
    """Refuse features holding NaN or inf, naming the split and how many rows: no head can fit or score them
    (scikit-learn would stop with a traceback, a Keras head would train to NaN)."""
    for split in SPLITS:
        bad = sum(non_finite_rows(chunk) for chunk in chunks(features[split]))
        if bad:
            hint = ("float16 storage overflows: re-extract with {dtype} float32" if cache.facts.get("dtype") == "float16"
                    else "re-extract it (its base may produce NaN on some images)")
            raise ArgumentError(f"{cache.path.name}: {bad} of {len(features[split])} {split} rows hold non-finite "
                                f"features (NaN or inf), which no head can train on; {hint}", "dtype")


def _check_classes(cache: FeatureCache, train_labels: np.ndarray) -> None:
    missing = sorted(set(range(len(cache.classes))) - set(np.unique(train_labels).tolist()))
    if missing:
        raise FeatpipeError(f"{cache.path.name}: class {', '.join(cache.classes[i] for i in missing)} has no "
                            "training rows (all its images were unreadable?)")


def _timing(cache: FeatureCache, fit_seconds: float, predict_seconds: float) -> dict:
    """Extraction cost (all splits of the cache) plus this head's; total = extract + fit + predict."""
    extract = cache.total_timing()
    return timing(fit_seconds=fit_seconds, predict_seconds=predict_seconds, extract_seconds=extract["seconds"],
                  extract_images_per_second=extract["images_per_second"])


def _run_info(cache: FeatureCache, head: Head, run_dir: Path, streamed: bool, predictions: dict) -> RunRecord:
    """run.json: enough to trace every number to its features and to rebuild the image -> class pipeline."""
    import sklearn

    attrs, facts = cache.attrs, cache.facts
    return RunRecord(
        name=run_dir.name, kind="head", path="cached", head=head.name,
        backbone=attrs["backbone"], weights=attrs["weights"], pretrained=attrs["pretrained"],
        image_size=attrs["image_size"], pooling=attrs["pooling"],
        crop_to_aspect_ratio=facts["crop_to_aspect_ratio"], preprocessing=facts["backbone"]["preprocessing"],
        cache={"path": str(cache.path.resolve()), "key": cache.key},
        dataset={"root": attrs["dataset"]["root"], "fingerprint": attrs["dataset"]["fingerprint"],
                 "classes": cache.classes},
        params=head.params, seed=head.random_state,
        versions={**attrs["versions"], "scikit-learn": sklearn.__version__, "numpy": np.__version__},
        model_file=head.model_file,
        details={
            "weights_id": facts["backbone"]["weights_id"], "streamed": streamed,
            # How the fit was done where the head chose (solver, exact kernel or its approximation, validation).
            "fit": {key: head.selection_[key] for key in ("solver", "kernel", "validation") if key in head.selection_},
            "predictions": predictions,  # per-image validation/test predictions (featpipe.run_predictions)
        },
    )
