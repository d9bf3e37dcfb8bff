"""Synthetic run directories for the report tests, written with the real run record, finish_run and metrics code."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from featpipe.metrics import classification_metrics
from featpipe.preprocessing import preprocessing_config
from featpipe.run_predictions import SplitPredictions, write_predictions
from featpipe.runs import RunRecord, finish_run, save_model_files, timing

HOSTILE = "<script>alert(1)</script>"
QUOTES = "\"&'"


def split_rows(classes: list[str], accuracy: float, n: int = 40, seed: int = 0) -> SplitPredictions:
    """Per-image predictions rigged to hit `accuracy` exactly (round(accuracy * n) right), on images (paths and
    labels) that depend on the classes and n only, so runs of one dataset share them; which rows are right
    depends on the seed."""
    k = len(classes)
    y_true = np.random.default_rng(n).permutation(np.arange(n) % k)  # every class present: ROC AUC is defined
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(k), size=n)
    right = np.zeros(n, dtype=bool)
    right[rng.permutation(n)[:round(accuracy * n)]] = True
    for i, y in enumerate(y_true):
        target = y if right[i] else (y + 1) % k
        proba[i, target] = proba[i].max() + 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    paths = tuple(f"{_folder(classes[y])}/{i:04d}.png" for i, y in enumerate(y_true))
    return SplitPredictions(paths, y_true, proba)


def _folder(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name) or "_"


def split_metrics(classes: list[str], accuracy: float, n: int = 40, seed: int = 0) -> dict:
    """classification_metrics of split_rows."""
    rows = split_rows(classes, accuracy, n, seed)
    return classification_metrics(rows.labels, rows.proba, classes)


def make_run(root: Path, name: str, *, path: str = "cached", backbone: str = "keras:VGG16", head: str = "logreg",
             classes=("cat", "dog"), val: float = 0.8, test: float = 0.75, extract: float = 10.0,
             fit: float = 2.0, total: float | None = None, images_per_second: float | None = 50.0,
             pretrained: bool = True, history: dict | None = None, seed: int = 0, n_test: int = 40,
             predictions: bool = True, images: bool = False, dataset: str = "data", image_size=(32, 32),
             weights: str | None = None) -> Path:
    """A finished run directory at root/<dir name derived from name>.

    `predictions`: record per-image predictions (runs made before featpipe recorded them have none);
    `images`: write the test images (small PNGs) under root/../<dataset>, where run.json says the dataset is.
    """
    classes = list(classes)
    rows = {"validation": split_rows(classes, val, seed=seed), "test": split_rows(classes, test, n_test, seed + 1000)}
    data_root = root.parent / dataset  # beside the runs, so a runs root holds runs only
    if images:
        _write_images(data_root, rows["test"])
    end_to_end = path == "end-to-end"
    model_file = "model.keras" if end_to_end else "model.joblib"
    record = RunRecord(
        name=name, kind="finetune" if end_to_end else "head", path=path, head="finetune" if end_to_end else head,
        backbone=backbone, weights=weights or ("imagenet" if pretrained else "none"), pretrained=pretrained,
        image_size=list(image_size), pooling="avg", crop_to_aspect_ratio=False, preprocessing=preprocessing_config("caffe"),
        cache=None if end_to_end else {"path": str(root / "cache.h5"), "key": "abc123"},
        dataset={"root": str(data_root), "fingerprint": f"f00d-{dataset}", "classes": classes},
        params={"C": 1.0} if not end_to_end else {"epochs": 8}, seed=seed, versions={"python": "3"},
        model_file=model_file, created="2024-01-01T00:00:00+00:00",
    )
    seconds = timing(fit_seconds=fit, predict_seconds=0.0, extract_seconds=0.0 if end_to_end else extract,
                     extract_images_per_second=None if end_to_end else images_per_second)
    metrics = {
        **{split: classification_metrics(r.labels, r.proba, classes) for split, r in rows.items()},
        "selection": None if end_to_end else {
            "metric": "accuracy",
            "grid": [{"params": {"C": 0.1}, "score": val - 0.05}, {"params": {"C": 1.0}, "score": val}],
            "best_params": {"C": 1.0},
        },
        # `total` forges a run's recorded total (a run that took no time at all).
        "timing": seconds if total is None else {**seconds, "total_seconds": total},
    }
    run_dir = root / "".join(c if c.isalnum() else "_" for c in name)
    if predictions:
        record = replace(record, details={"predictions": write_predictions(run_dir, rows)})
    # A stand-in model file: the report checks the digest of every model a run names, never loads it.
    digests = save_model_files(run_dir, lambda folder: (folder / model_file).write_bytes(name.encode()))
    return finish_run(run_dir, record, metrics, history, digests)


def _write_images(root: Path, rows: SplitPredictions) -> None:
    for i, (path, label) in enumerate(zip(rows.paths, rows.labels)):
        target = root / path
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.zeros((24, 24, 3), np.uint8)
        pixels[..., int(label) % 3] = 60 + 5 * (i % 30)
        Image.fromarray(pixels).save(target)


def make_history(epochs: int = 8, fine_tune_at: int | None = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def curve(start: float, end: float) -> list[float]:
        return (np.linspace(start, end, epochs) + rng.normal(0, 0.02, epochs)).tolist()

    phases = [{"name": "frozen", "start_epoch": 0}]
    if fine_tune_at is not None:
        phases.append({"name": "fine-tune", "start_epoch": fine_tune_at})
    return {"loss": curve(1.2, 0.3), "val_loss": curve(1.1, 0.5), "accuracy": curve(0.5, 0.95),
            "val_accuracy": curve(0.5, 0.85), "phases": phases}
