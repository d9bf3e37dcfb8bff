"""Synthetic run directories for the report tests, written with the real run record, finish_run and metrics code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featpipe.metrics import classification_metrics
from featpipe.preprocessing import preprocessing_config
from featpipe.runs import RunRecord, finish_run, save_model_files, timing

HOSTILE = "<script>alert(1)</script>"
QUOTES = "\"&'"


def split_metrics(classes: list[str], accuracy: float, n: int = 40, seed: int = 0) -> dict:
    """classification_metrics on random probabilities rigged to hit `accuracy` exactly (round(accuracy * n) right)."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    y_true = rng.permutation(np.arange(n) % k)  # every class present, so ROC AUC is defined
    proba = rng.dirichlet(np.ones(k), size=n)
    n_right = round(accuracy * n)
    for i, y in enumerate(y_true):
        target = y if i < n_right else (y + 1) % k
        proba[i, target] = proba[i].max() + 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    return classification_metrics(y_true, proba, classes)


def make_run(root: Path, name: str, *, path: str = "cached", backbone: str = "keras:VGG16", head: str = "logreg",
             classes=("cat", "dog"), val: float = 0.8, test: float = 0.75, extract: float = 10.0,
             fit: float = 2.0, total: float | None = None, images_per_second: float | None = 50.0,
             pretrained: bool = True, history: dict | None = None, seed: int = 0) -> Path:
    """A finished run directory at root/<dir name derived from name>."""
    classes = list(classes)
    end_to_end = path == "end-to-end"
    model_file = "model.keras" if end_to_end else "model.joblib"
    record = RunRecord(
        name=name, kind="finetune" if end_to_end else "head", path=path, head="finetune" if end_to_end else head,
        backbone=backbone, weights="imagenet" if pretrained else "none", pretrained=pretrained,
        image_size=[32, 32], pooling="avg", crop_to_aspect_ratio=False, preprocessing=preprocessing_config("caffe"),
        cache=None if end_to_end else {"path": str(root / "cache.h5"), "key": "abc123"},
        dataset={"root": str(root / "data"), "fingerprint": "f00d", "classes": classes},
        params={"C": 1.0} if not end_to_end else {"epochs": 8}, seed=seed, versions={"python": "3"},
        model_file=model_file, created="2024-01-01T00:00:00+00:00",
    )
    seconds = timing(fit_seconds=fit, predict_seconds=0.0, extract_seconds=0.0 if end_to_end else extract,
                     extract_images_per_second=None if end_to_end else images_per_second)
    metrics = {
        "validation": split_metrics(classes, val, seed=seed),
        "test": split_metrics(classes, test, seed=seed + 1000),
        "selection": None if end_to_end else {
            "metric": "accuracy",
            "grid": [{"params": {"C": 0.1}, "score": val - 0.05}, {"params": {"C": 1.0}, "score": val}],
            "best_params": {"C": 1.0},
        },
        # `total` forges a run's recorded total (a run that took no time at all).
        "timing": seconds if total is None else {**seconds, "total_seconds": total},
    }
    run_dir = root / "".join(c if c.isalnum() else "_" for c in name)
    # A stand-in model file: the report checks the digest of every model a run names, never loads it.
    digests = save_model_files(run_dir, lambda folder: (folder / model_file).write_bytes(name.encode()))
    return finish_run(run_dir, record, metrics, history, digests)


def make_history(epochs: int = 8, fine_tune_at: int | None = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def curve(start: float, end: float) -> list[float]:
        return (np.linspace(start, end, epochs) + rng.normal(0, 0.02, epochs)).tolist()

    phases = [{"name": "frozen", "start_epoch": 0}]
    if fine_tune_at is not None:
        phases.append({"name": "fine-tune", "start_epoch": fine_tune_at})
    return {"loss": curve(1.2, 0.3), "val_loss": curve(1.1, 0.5), "accuracy": curve(0.5, 0.95),
            "val_accuracy": curve(0.5, 0.85), "phases": phases}
