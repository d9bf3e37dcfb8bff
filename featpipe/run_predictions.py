"""A run's per-image predictions (predictions.npz): the one writer and the one reader.

For the validation and test splits, row by row: the image's path relative to the dataset root, its true
label and the class probabilities the run's model gave it. The report needs them for what a run's metrics
cannot say: paired tests between runs scored on the same images, a run's most confident mistakes, and
reliability diagrams.

The file is a plain ``.npz`` (no pickles: it is read with ``allow_pickle=False``), probabilities as float32.
run.json records its name and SHA-256 under ``"predictions"``; the reader refuses a file that does not match.
Runs written before this file existed have no such entry: `read_predictions` returns None for them.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featpipe import atomic
from featpipe.errors import FeatpipeError
from featpipe.provenance import sha256_file

PREDICTIONS_FILE = "predictions.npz"
RECORD_KEY = "predictions"  # run.json: {"file": PREDICTIONS_FILE, "sha256": ..., "splits": [...]}
SPLITS = ("validation", "test")


@dataclass(frozen=True)
class SplitPredictions:
    """One split's rows: relative image paths, true labels, class probabilities (rows x classes)."""

    paths: tuple[str, ...]
    labels: np.ndarray
    proba: np.ndarray

    def __post_init__(self):
        n = len(self.paths)
        if np.ndim(self.labels) != 1 or len(self.labels) != n or np.ndim(self.proba) != 2 or len(self.proba) != n:
            raise ValueError(f"predictions disagree: {n} paths, labels of shape {np.shape(self.labels)}, "
                             f"probabilities of shape {np.shape(self.proba)}")

    @property
    def predicted(self) -> np.ndarray:
        return np.asarray(self.proba).argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == np.asarray(self.labels)


def write_predictions(run_dir: str | os.PathLike, splits: dict[str, SplitPredictions]) -> dict:
    """Write run_dir/predictions.npz atomically; returns the record run.json keeps under "predictions"."""
    arrays = {}
    for split, rows in splits.items():
        arrays[f"{split}.paths"] = np.asarray(rows.paths, dtype=str) if rows.paths else np.zeros(0, dtype="<U1")
        arrays[f"{split}.labels"] = np.asarray(rows.labels, dtype=np.int32)
        arrays[f"{split}.proba"] = np.asarray(rows.proba, dtype=np.float32)
    path = Path(atomic.make_dirs(run_dir)) / PREDICTIONS_FILE
    with atomic.atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return {"file": PREDICTIONS_FILE, "sha256": sha256_file(path), "splits": sorted(splits)}


def read_predictions(run_dir: str | os.PathLike, info: dict) -> dict[str, SplitPredictions] | None:
    """{split: SplitPredictions} of a finished run (`info`: its run.json), or None when the run recorded none.

    FeatpipeError when the file is missing, differs from its recorded digest, or is malformed.
    """
    record = info.get(RECORD_KEY)
    if record is None:
        return None
    run_dir = Path(run_dir)
    if not isinstance(record, dict) or record.get("file") != PREDICTIONS_FILE or not isinstance(record.get("sha256"), str):
        raise FeatpipeError(f"{run_dir}/run.json has a malformed {RECORD_KEY!r} entry")
    path = run_dir / PREDICTIONS_FILE
    if not path.is_file():
        raise FeatpipeError(f"{path} is missing (run.json records it)")
    if sha256_file(path) != record["sha256"]:
        raise FeatpipeError(f"{path} does not match the SHA-256 recorded when it was written (modified or replaced)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FeatpipeError(f"unreadable {path}: {e}") from None
    splits = {}
    for split in sorted({name.rsplit(".", 1)[0] for name in arrays}):
        try:
            paths, labels, proba = (arrays[f"{split}.{part}"] for part in ("paths", "labels", "proba"))
            if paths.dtype.kind != "U" or labels.dtype.kind not in "iu" or proba.dtype.kind != "f":
                raise ValueError("wrong array types")
            splits[split] = SplitPredictions(tuple(paths.tolist()), labels, proba)
        except (KeyError, ValueError) as e:
            raise FeatpipeError(f"malformed {path} ({split}): {e}") from None
    return splits
