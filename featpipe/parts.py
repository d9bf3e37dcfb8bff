"""Part files: the unit of extraction work, of retry and of resume.

A part is a contiguous row range ``[start, stop)`` of one split. Its file holds the features of the rows that
decoded, their labels, row numbers and relative paths, and the rows that did not decode with the reason, so a
part is self-describing: any process can validate it, and the assembly needs nothing else. Parts are written
through featpipe.atomic (a unique temporary name, renamed into place), so a part file that exists is complete,
and two processes that happen to produce the same part (a rerun racing a straggler) leave one correct copy.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from featpipe import atomic
from featpipe.store import (COMPUTED, DIGESTS, FEATURES, LABELS, PATHS, REUSED, SECONDS, SKIPPED_PATHS,
                            SKIPPED_REASONS, STR)

# A part file: the cache's split datasets (featpipe.store) for its kept rows, plus these two.
ROWS, SKIPPED_ROWS = "rows", "skipped_rows"

# A part holds many batches: big enough that per-file costs vanish, small enough that a killed worker loses
# little work and a queue of a few parts stays bounded in memory.
PART_MAX_ROWS = 4096
PART_MAX_BYTES = 64 << 20


@dataclass(frozen=True, order=True)
class Part:
    split: str
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def file_name(self) -> str:
        return f"{self.split}-{self.start:010d}-{self.stop:010d}.h5"

    def __str__(self) -> str:
        return f"{self.split} rows {self.start}-{self.stop - 1}"

    @classmethod
    def from_file_name(cls, name: str) -> "Part | None":
        stem, ext = os.path.splitext(name)
        split, _, rest = stem.rpartition("-")
        split, _, start = split.rpartition("-")
        if ext != ".h5" or not (split and start.isdigit() and rest.isdigit()):
            return None
        return cls(split, int(start), int(rest))


def part_rows_for(row_bytes: int, largest_split: int, workers: int = 1) -> int:
    """Rows per part: at most PART_MAX_ROWS and PART_MAX_BYTES, and small enough that each worker gets a few."""
    by_bytes = max(1, PART_MAX_BYTES // max(1, row_bytes))
    by_share = max(1, math.ceil(largest_split / (4 * max(1, workers))))
    return min(PART_MAX_ROWS, by_bytes, by_share)


def plan_parts(split_rows: dict[str, int], part_rows: int) -> list[Part]:
    """Every part of every split, in split then row order: the same plan for every process."""
    return [Part(split, start, min(start + part_rows, n))
            for split, n in split_rows.items() for start in range(0, n, part_rows)]


def shard_parts(parts: list[Part], k: int, n: int) -> list[Part]:
    """The K-th of N contiguous, near-equal slices of `parts` (by row count): what shard K/N extracts."""
    return [part for part, owner in zip(parts, shard_owners(parts, n)) if owner == k]


def shard_owners(parts: list[Part], n: int) -> list[int]:
    """The shard K of N that extracts each part of `parts`: the slice holding the part's middle row.

    Integer arithmetic, one pass over the parts whatever N is (never a loop over the shard numbers), so
    every process computes the same owners exactly.
    """
    total, at, owners = sum(p.rows for p in parts), 0, []
    for part in parts:
        # slice k holds row r when total*k/n <= r < total*(k+1)/n; the middle row is at + rows/2
        owners.append(min(n - 1, n * (2 * at + part.rows) // (2 * total)) if total else 0)
        at += part.rows
    return owners


@dataclass
class PartData:
    """One part's content, as the extraction loop produced it."""

    part: Part
    features: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    paths: list[str]
    skipped_rows: np.ndarray
    skipped_paths: list[str]
    skipped_reasons: list[str]
    seconds: float
    # The last part of a run also counts the time from this perf_counter() reading until it is on disk: the
    # run waits for that write, so it is part of the run's wall time.
    clock_from: float | None = None
    # The kept rows' content digests (rows, 32) (None: not known, e.g. a part written before they were kept),
    # and where the rows came from: {source cache file: rows copied}; the others were computed.
    digests: np.ndarray | None = None
    reused: dict[str, int] = field(default_factory=dict)


def write_part(directory: Path, key: str, data: PartData) -> Path:
    """Write a part file atomically (featpipe.atomic: a temporary name, fsync, rename, directory fsync);
    a full disk or another write error is one line naming the part file."""
    path = directory / data.part.file_name
    with atomic.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["key"] = key
        f.create_dataset(FEATURES, data=data.features)
        f.create_dataset(LABELS, data=data.labels.astype(np.int32))
        f.create_dataset(ROWS, data=data.rows.astype(np.int64))
        f.create_dataset(PATHS, data=data.paths, dtype=STR)
        f.create_dataset(SKIPPED_ROWS, data=data.skipped_rows.astype(np.int64))
        f.create_dataset(SKIPPED_PATHS, data=data.skipped_paths, dtype=STR)
        f.create_dataset(SKIPPED_REASONS, data=data.skipped_reasons, dtype=STR)
        if data.digests is not None:  # (a part without digests keeps the layout of before issue 19)
            f.create_dataset(DIGESTS, data=np.asarray(data.digests, np.uint8))
            f.attrs[REUSED] = json.dumps(data.reused)
            f.attrs[COMPUTED] = len(data.rows) - sum(data.reused.values())
        waited = time.perf_counter() - data.clock_from if data.clock_from is not None else 0.0
        f.attrs[SECONDS] = data.seconds + waited
    return path


def check_part(path: Path, part: Part, key: str, classes: int | None = None, split=None) -> str | None:
    """Why the part file at `path` cannot be used for `part` of `key`, or None when it is sound.

    Its contents are checked too, so a tampered or foreign part is redone rather than merged: labels within
    `classes`, and, given the dataset's `split` (its ``paths`` and ``labels``), each row's path and label
    those of the dataset.
    """
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("key") != key:
                return "it belongs to another extraction"
            rows, skipped, labels = f[ROWS][()], f[SKIPPED_ROWS][()], f[LABELS][()]
            lengths = {f[name].shape[0] for name in (FEATURES, LABELS, PATHS)} | {rows.shape[0]}
            if lengths != {rows.shape[0]} or f[SKIPPED_PATHS].shape[0] != skipped.shape[0] \
                    or f[SKIPPED_REASONS].shape[0] != skipped.shape[0]:
                return "its datasets have different lengths"
            if f[FEATURES].dtype.kind != "f" or (rows.size and f[FEATURES].ndim < 2):
                return "its features are not rows of floats"
            if DIGESTS in f and f[DIGESTS].shape != (rows.shape[0], 32):
                return "its digests do not match its rows"
            covered = np.sort(np.concatenate([rows, skipped]))
            if not np.array_equal(covered, np.arange(part.start, part.stop)) or np.any(np.diff(rows) <= 0):
                return "its rows do not cover its range in order"
            if classes is not None and labels.size and (labels.min() < 0 or labels.max() >= classes):
                return f"it has labels outside the {classes} classes"
            if split is not None:
                paths = f[PATHS].asstr()[()].tolist()
                if paths != [split.paths[r] for r in rows]:
                    return "its paths are not the dataset's"
                if not np.array_equal(labels, np.asarray(split.labels, np.int64)[rows]):
                    return "its labels are not the dataset's"
            float(f.attrs[SECONDS])
    except (OSError, KeyError, ValueError, TypeError, IndexError) as e:
        return f"it cannot be read ({type(e).__name__})"
    return None


class PartFile:
    """Read access to a part file `check_part` found sound (for the assembly): ``with PartFile(path) as p``."""

    def __init__(self, path: Path):
        self._file = h5py.File(path, "r")

    @property
    def kept(self) -> int:
        return self._file[ROWS].shape[0]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self._file[FEATURES].shape[1:]

    @property
    def seconds(self) -> float:
        return float(self._file.attrs[SECONDS])

    def features(self) -> np.ndarray:
        return self._file[FEATURES][()]

    def labels(self) -> np.ndarray:
        return self._file[LABELS][()]

    def paths(self) -> np.ndarray:
        return self._file[PATHS][()]

    def digests(self) -> np.ndarray | None:
        return self._file[DIGESTS][()] if DIGESTS in self._file else None

    @property
    def origin(self) -> tuple[int, dict[str, int]] | None:
        """(rows computed, {source cache file: rows reused}), None for a part from before this was recorded."""
        attrs = self._file.attrs
        if REUSED not in attrs:
            return None
        return int(attrs[COMPUTED]), json.loads(attrs[REUSED])

    def skipped(self) -> list[tuple[str, str]]:
        return list(zip(self._file[SKIPPED_PATHS].asstr()[()].tolist(),
                        self._file[SKIPPED_REASONS].asstr()[()].tolist()))

    def __enter__(self) -> "PartFile":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()
