"""What makes a killed fine-tuning run resumable: per-epoch records and weights, committed as one JSON file."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator

import keras

from featpipe import runs
from featpipe.errors import FeatpipeError

PROGRESS_FILE = "progress.json"


@contextlib.contextmanager
def checkpoint_directory(path: str | os.PathLike | None) -> Iterator[Path]:
    """`path` (created if needed), or a temporary folder removed afterwards when there is none."""
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="featpipe-finetune-") as tmp:
        yield Path(tmp)


def _read_progress(directory: Path) -> dict:
    """The committed progress, or {} (start over, with a warning) when it is damaged or points at a weights file
    that is gone: a work file read back is checked, never trusted into a crash."""
    try:
        state = runs.read_json_object(directory / PROGRESS_FILE)
        files = [(state.get("best") or {}).get("weights"), state.get("last")]
        if not isinstance(state.get("epochs", []), list) or not isinstance(state.get("finished", []), list):
            raise FeatpipeError(f"{directory / PROGRESS_FILE} has the wrong shape")
        gone = [name for name in files if name is not None and not (directory / str(name)).is_file()]
        if gone:
            raise FeatpipeError(f"{directory / PROGRESS_FILE} points at missing {', '.join(map(str, gone))}")
    except (FeatpipeError, AttributeError) as e:
        warnings.warn(f"discarding the fine-tuning checkpoint, starting over: {e}", stacklevel=3)
        return {}
    return state


class ResumeState:
    """Epoch records, the best weights so far and the last epoch's training state, committed as one JSON file.

    Weight files are named by epoch and only the committed JSON points at them, so a run killed while
    writing resumes from a consistent epoch; files nothing points at are deleted.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        state = _read_progress(directory) if self.path(PROGRESS_FILE).is_file() else {}
        self.epochs: list[dict] = state.get("epochs", [])
        self.finished: list[str] = state.get("finished", [])
        self.best: dict | None = state.get("best")
        self.last: str | None = state.get("last")

    def path(self, name: str) -> Path:
        return self.directory / name

    def epochs_done(self, phase: str) -> int:
        return sum(record["phase"] == phase for record in self.epochs)

    def record(self, phase: str, epoch: int, logs: dict, seconds: float, training_model, inference_model) -> None:
        record = {"phase": phase, "epoch": epoch, "seconds": seconds, **{k: float(v) for k, v in logs.items()}}
        val_loss = record.get("val_loss", math.nan)
        if math.isfinite(val_loss) and (self.best is None or val_loss < self.best["val_loss"]):
            name = f"best-{epoch}.weights.h5"
            runs.save_weights(inference_model, self.path(name))
            self.best = {"phase": phase, "epoch": epoch, "val_loss": val_loss, "weights": name}
        self.last = f"last-{epoch}.weights.h5"
        runs.save_weights(training_model, self.path(self.last))
        self.epochs.append(record)
        self._commit()

    def finish(self, phase: str) -> None:
        self.finished.append(phase)
        self.last = None
        self._commit()

    def _commit(self) -> None:
        runs.write_json(self.path(PROGRESS_FILE), {"epochs": self.epochs, "finished": self.finished,
                                                   "best": self.best, "last": self.last})
        keep = {PROGRESS_FILE, self.last, self.best and self.best["weights"]}
        for file in self.directory.glob("*.weights.h5"):
            if file.name not in keep:
                file.unlink()

    def history(self) -> dict:
        """Keras-style lists over both phases plus where each phase starts."""
        keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if any(k in r for r in self.epochs)]
        history = {k: [r.get(k) for r in self.epochs] for k in keys}
        starts = {}
        for i, record in enumerate(self.epochs):
            starts.setdefault(record["phase"], i)
        history["phases"] = [{"name": name, "start_epoch": start} for name, start in starts.items()]
        return history

    def phase_seconds(self) -> dict:
        seconds: dict[str, float] = {}
        for record in self.epochs:
            seconds[record["phase"]] = seconds.get(record["phase"], 0.0) + record["seconds"]
        return seconds


class EpochCheckpoint(keras.callbacks.Callback):
    """Commits each finished epoch to `progress`; at the start of a phase, resumes from its last epoch."""

    def __init__(self, progress: ResumeState, phase: str, inference_model: keras.Model):
        super().__init__()
        self.progress, self.phase, self.inference_model = progress, phase, inference_model
        self.clock = time.perf_counter()

    def on_train_begin(self, logs=None):
        if self.progress.last:
            if not self.model.optimizer.built:  # its state is in the file too; it must exist to be loaded
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(self.progress.path(self.progress.last))

    def on_epoch_begin(self, epoch, logs=None):
        self.clock = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.progress.record(self.phase, epoch, logs or {}, time.perf_counter() - self.clock,
                             self.model, self.inference_model)
