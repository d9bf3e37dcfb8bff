"""A fine-tuning run directory: its key and name, resume-or-reuse, and its record in the shared run format."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from featpipe import runs, runtime
from featpipe.data import ImageFolder
from featpipe.finetune.tuner import FineTuner, require_split
from featpipe.metrics import classification_metrics
from featpipe.pipeline import DECODE_RULE
from featpipe.provenance import key_digest, versions
from featpipe.run_predictions import write_predictions

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.keras"


@dataclass
class FinetuneRun:
    """A finished end-to-end run (made now or found complete)."""

    run_dir: Path
    reused: bool
    run: dict
    metrics: dict

    def summary(self) -> dict:
        return {
            "head": "finetune", "run_dir": str(self.run_dir), "name": self.run["name"], "reused": self.reused,
            "val_accuracy": self.metrics["validation"]["accuracy"], "test_accuracy": self.metrics["test"]["accuracy"],
            "seconds": round(self.metrics["timing"]["total_seconds"], 3),
        }


def run_key(data: ImageFolder, tuner: FineTuner) -> str:
    """What makes two runs the same: base, input size, dataset, hyperparameters, seed, precision and, past one
    device, the number of replicas (the global batch). A single-device run keeps the key it always had, so
    runs made before data-parallel training stay reusable; a job requeued on a node with another GPU count
    starts its own run instead of resuming with another global batch."""
    replicas = tuner.replicas
    return key_digest({
        "backbone": tuner.backbone.identity(), "image_size": list(tuner.backbone.image_size),
        "dataset": data.fingerprint(), "classes": list(data.classes), "params": tuner.params(),
        "seed": tuner.seed, "compute_dtype": tuner.compute_dtype, **({"replicas": replicas} if replicas > 1 else {}),
        "decode": DECODE_RULE,  # how its images' pixels are decoded, as for a cache key
    })


def run_name(data: ImageFolder, tuner: FineTuner) -> str:
    return f"finetune-{tuner.backbone.label}-{tuner.backbone.image_size[0]}-{run_key(data, tuner)[:10]}"


def run_finetune(data: ImageFolder, tuner: FineTuner, runs_dir: str | os.PathLike = "runs", *, force: bool = False,
                 callbacks=(), device: str = "", verbose: int | str = 0) -> FinetuneRun:
    """Fine-tune into runs_dir/<run name>: resume an unfinished run, reuse a finished one unless `force`."""
    tuner.check()
    data.require_classes("train")
    require_split(data, "validation", "carve one with --val-fraction")
    require_split(data, "test", "the run reports test metrics")
    run_dir = Path(runs_dir) / run_name(data, tuner)
    if not force and runs.is_complete(run_dir):
        return _reuse(run_dir)  # reading needs no lock (nor a writable runs dir)
    with runs.run_lock(run_dir):  # two processes never train (or checkpoint into) one run directory at once
        return _run_locked(data, tuner, run_dir, force, callbacks, device, verbose)


def _reuse(run_dir: Path) -> FinetuneRun:
    loaded = runs.load_run(run_dir)
    runs.verified_model_file(run_dir, loaded["run"])  # reuse only a model featpipe can show it wrote
    return FinetuneRun(run_dir, True, loaded["run"], loaded["metrics"])


def _run_locked(data: ImageFolder, tuner: FineTuner, run_dir: Path, force: bool, callbacks, device: str,
                verbose: int | str) -> FinetuneRun:
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if runs.is_complete(run_dir):  # finished by another process since the check outside the lock
        return _reuse(run_dir)
    clock = time.perf_counter()
    tuner.fit(data, run_dir / CHECKPOINT_DIR, callbacks=callbacks, verbose=verbose)
    calibration = tuner.calibrate(data)
    fitted = time.perf_counter()
    found = {split: tuner.predictions(data, split) for split in ("validation", "test")}
    metrics = {split: classification_metrics(p.labels, p.proba, list(data.classes)) for split, p in found.items()}
    predict_seconds = time.perf_counter() - fitted
    predictions = write_predictions(run_dir, found)
    digests = runs.save_model_files(run_dir, lambda folder: tuner.model_.save(folder / MODEL_FILE))
    metrics["selection"] = None if tuner.best_ is None else {
        "metric": "val_loss", "best_params": {"phase": tuner.best_["phase"], "epoch": tuner.best_["epoch"] + 1},
        "score": tuner.best_["val_loss"],
    }
    if calibration is not None:
        metrics["selection"] = {**(metrics["selection"] or {}), "calibration": "temperature scaling on the "
                                "validation split, after training", "temperature": calibration}
    metrics["timing"] = _timing(tuner, len(data.splits["train"]), predict_seconds,
                                setup_seconds=fitted - clock - sum(tuner.phase_seconds_.values()))
    record = _run_info(data, tuner, run_dir.name, device, predictions)
    runs.finish_run(run_dir, record, metrics, tuner.history_, digests)
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    return FinetuneRun(run_dir, False, record.to_json(), metrics)


def _timing(tuner: FineTuner, n_train: int, predict_seconds: float, setup_seconds: float) -> dict:
    """Fit time sums the epochs of every attempt (a resumed run counts the epochs done before too)."""
    fit_seconds = sum(tuner.phase_seconds_.values())
    return runs.timing(
        fit_seconds=fit_seconds, predict_seconds=predict_seconds, setup_seconds=max(setup_seconds, 0.0),
        phase_seconds=tuner.phase_seconds_,
        # Counts the train split's files each epoch (unreadable ones are few and dropped by the pipeline).
        images_per_second=n_train * tuner.epochs_run_ / fit_seconds if fit_seconds else None,
    )


def _run_info(data: ImageFolder, tuner: FineTuner, name: str, device: str, predictions: dict) -> runs.RunRecord:
    backbone = tuner.backbone
    return runs.RunRecord(
        name=name, kind="finetune", path="end-to-end", head="finetune",
        backbone=backbone.spec, weights=backbone.weights, pretrained=backbone.pretrained,
        image_size=list(backbone.image_size), pooling=tuner.pooling,
        crop_to_aspect_ratio=tuner.crop_to_aspect_ratio, preprocessing=backbone.preprocessing,
        cache=None,
        dataset={"root": str(data.root.resolve()), "fingerprint": data.fingerprint(), "classes": list(data.classes),
                 "val_fraction": data.val_fraction},
        params=tuner.params(), seed=tuner.seed, versions=versions(), model_file=MODEL_FILE,
        details={
            "trainable_params": tuner.trainable_params_, "augment_in_model": tuner.augment_in_model_,
            "distribution": tuner.distribution_,
            "device": device or runtime.device_label(),
            "compute_dtype": tuner.compute_dtype, "precision": tuner.precision,
            "predictions": predictions,  # per-image validation/test predictions (featpipe.run_predictions)
        },
    )
