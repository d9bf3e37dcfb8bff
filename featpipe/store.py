"""The HDF5 feature cache's format, its one owner: keys, file names, the writer's layout and the reader.

One final file per cache key, ``<cache_dir>/<name>-<key16>.h5``::

    attrs: featpipe_format, key, facts (JSON), classes (JSON), versions, device, created
    /<split>/features         (rows, *feature_shape)   chunked, optionally compressed
    /<split>/labels           (rows,) int32
    /<split>/paths            (rows,) UTF-8, relative to the dataset root
    /<split>/skipped_paths    (k,) UTF-8; /<split>/skipped_reasons (k,) UTF-8
    /<split>/digests          (rows, 32) uint8: each row's image content digest (SHA-256 of its bytes), what
                              later extractions reuse rows by (featpipe.reuse); absent in older caches
    /<split> attrs: seconds   wall time spent extracting the split, summed over workers and resumed runs
                    computed  rows this extraction computed; reused: JSON {source cache file name: rows copied}

While an extraction runs its work lives in ``<final>.partial/`` (featpipe.workdir, featpipe.parts); the final
file is assembled from it (featpipe.assemble) under a temporary name and renamed, so a file with the final name
is always complete.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from featpipe.choices import SPLITS
from featpipe.errors import FeatpipeError

FORMAT_VERSION = 1
# Each split's datasets (a part file holds the same ones, plus its row numbers: featpipe.parts).
FEATURES, LABELS, PATHS, SKIPPED_PATHS, SKIPPED_REASONS = SPLIT_DATASETS = (
    "features", "labels", "paths", "skipped_paths", "skipped_reasons")
SECONDS = "seconds"  # a split's attribute: wall time spent extracting it
# Optional per split (older caches lack them): row content digests, and where the rows came from.
DIGESTS, DIGEST_SIZE = "digests", 32
COMPUTED, REUSED = "computed", "reused"
STR = h5py.string_dtype("utf-8")
# File attributes stored as themselves; every other one is JSON.
_PLAIN_ATTRS = ("featpipe_format", "key")


def ordered_splits(names) -> list[str]:
    """Splits in the cache's order: train, validation, test, then any other by name."""
    names = set(names)
    return [s for s in SPLITS if s in names] + sorted(names - set(SPLITS))


def write_header(file: h5py.File, key: str, attrs: dict) -> None:
    """A new cache file's attributes: the format version, the key, and `attrs` (each stored as JSON)."""
    for name, value in attrs.items():
        file.attrs[name] = json.dumps(value, default=str)
    file.attrs["featpipe_format"] = FORMAT_VERSION
    file.attrs["key"] = key


def create_split(file: h5py.File, split: str, rows: int, feature_shape: tuple[int, ...], dtype: str,
                 compression: str | None, digests: bool = True) -> h5py.Group:
    """A split's group with its features, labels, paths (and digests) datasets sized for `rows` rows, to be
    filled in; `finish_split` adds the skipped files, the timing and the origin."""
    group = file.create_group(split)
    # Fletcher-32 checksums per chunk: a flipped bit on disk is an error on read, not a silently wrong feature.
    group.create_dataset(FEATURES, shape=(rows, *feature_shape), dtype=dtype,
                         chunks=_chunks(feature_shape, dtype, rows), compression=compression, fletcher32=True)
    group.create_dataset(LABELS, shape=(rows,), dtype=np.int32, fletcher32=True)
    group.create_dataset(PATHS, shape=(rows,), dtype=STR)
    if digests:
        group.create_dataset(DIGESTS, shape=(rows, DIGEST_SIZE), dtype=np.uint8, fletcher32=True)
    return group


def finish_split(group: h5py.Group, skipped: list[tuple[str, str]], seconds: float, computed: int | None = None,
                 reused: dict[str, int] | None = None) -> None:
    """The skipped files, the timing and the rows' origin: `computed` by the base (None: not recorded),
    `reused` {source cache file: rows}."""
    group.create_dataset(SKIPPED_PATHS, data=[path for path, _ in skipped], dtype=STR)
    group.create_dataset(SKIPPED_REASONS, data=[reason for _, reason in skipped], dtype=STR)
    group.attrs[SECONDS] = seconds
    if computed is not None:
        group.attrs[COMPUTED] = computed
        group.attrs[REUSED] = json.dumps(reused or {})


def _chunks(shape: tuple[int, ...], dtype: str, n: int) -> tuple[int, ...]:
    # About 1 MiB per chunk: big enough for fast sequential reads, small enough for row batches.
    row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return (max(1, min(n, (1 << 20) // max(1, row_bytes))), *shape)


def cache_file_name(label: str, key: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_.")[:80] or "features"
    return f"{slug}-{key[:16]}.h5"


class FeatureCache:
    """Read access to a finished cache file: features, labels, class names and facts per split.

    ``features(split)`` loads a split into memory; ``iter_batches(split, n)`` streams it in row chunks
    for caches bigger than memory.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            hint = " (an extraction is still running or was interrupted)" if Path(f"{path}.partial").exists() else ""
            raise FeatpipeError(f"no finished cache file at {self.path}{hint}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise FeatpipeError(f"cannot read cache file {self.path}: {e}") from None
        if self._file.attrs.get("featpipe_format") != FORMAT_VERSION:
            self._file.close()
            raise FeatpipeError(f"{self.path} is not a complete featpipe cache (format {FORMAT_VERSION})")
        try:
            with self._reading():
                self.key, self.facts, self.classes = self._check()
        except FeatpipeError:
            self._file.close()
            raise

    def _damaged(self, what: str) -> FeatpipeError:
        return FeatpipeError(f"{self.path} is damaged ({what}); delete it and run the extraction again")

    @contextmanager
    def _reading(self):
        """HDF5's own errors on a damaged file (a bad heap, a chunk whose checksum fails) -> one clear line."""
        try:
            yield
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
            raise self._damaged(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None

    def _check(self) -> tuple[str, dict, list[str]]:
        """Everything a reader relies on, checked up front: a damaged file is one clear error, not a KeyError."""
        damaged = self._damaged
        try:
            key = self._file.attrs["key"]
            facts, classes = self._json_attr("facts"), self._json_attr("classes")
            self.attrs  # every other attribute decodes too
        except (KeyError, ValueError, TypeError) as e:
            raise damaged(f"unreadable attribute: {type(e).__name__}") from None
        if not isinstance(key, str) or not isinstance(facts, dict) or not isinstance(classes, list) \
                or not all(isinstance(c, str) for c in classes):
            raise damaged("missing or malformed key, facts or classes")
        if not self.splits:
            raise damaged("no split")
        for split in self.splits:
            group = self._file[split]
            if not isinstance(group, h5py.Group) or any(
                    not isinstance(group.get(name), h5py.Dataset) for name in SPLIT_DATASETS):
                raise damaged(f"split {split!r} lacks one of {', '.join(SPLIT_DATASETS)}")
            rows = {group[name].shape[0] if group[name].shape else -1 for name in (FEATURES, LABELS, PATHS)}
            if len(rows) != 1 or group[SKIPPED_PATHS].shape != group[SKIPPED_REASONS].shape \
                    or SECONDS not in group.attrs:
                raise damaged(f"split {split!r} has datasets of different lengths or no timing")
            labels = group[LABELS][()]
            if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
                raise damaged(f"split {split!r} has labels outside its {len(classes)} classes")
        return key, facts, classes

    def _json_attr(self, name: str):
        return json.loads(self._file.attrs[name]) if name in self._file.attrs else None

    @property
    def attrs(self) -> dict:
        """Every file attribute, decoded."""
        return {name: self._json_attr(name) for name in self._file.attrs if name not in _PLAIN_ATTRS}

    @property
    def splits(self) -> list[str]:
        return ordered_splits(self._file)

    def _group(self, split: str) -> h5py.Group:
        if split not in self._file:
            raise FeatpipeError(f"{self.path.name} has no {split!r} split (it has {', '.join(self.splits) or 'none'})")
        return self._file[split]

    def n_rows(self, split: str) -> int:
        return self._group(split)[FEATURES].shape[0]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self._group(self.splits[0])[FEATURES].shape[1:]

    def features(self, split: str) -> np.ndarray:
        with self._reading():
            return self._group(split)[FEATURES][()]

    def labels(self, split: str) -> np.ndarray:
        with self._reading():
            return self._group(split)[LABELS][()]

    def paths(self, split: str) -> list[str]:
        with self._reading():
            return self._group(split)[PATHS].asstr()[()].tolist()

    def skipped(self, split: str) -> list[tuple[str, str]]:
        group = self._group(split)
        with self._reading():
            return list(zip(group[SKIPPED_PATHS].asstr()[()].tolist(),
                            group[SKIPPED_REASONS].asstr()[()].tolist()))

    def digests(self, split: str) -> np.ndarray | None:
        """(rows, 32) content digests of the split's rows, or None for a cache made before they were kept."""
        group = self._group(split)
        found = group.get(DIGESTS)
        if not isinstance(found, h5py.Dataset) or found.shape != (group[FEATURES].shape[0], DIGEST_SIZE):
            return None
        with self._reading():
            return found[()]

    def read_rows(self, split: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(features, digests or None) of the sorted `rows` of a split. A span not much longer than the rows
        is read in one slice (sequential I/O), else row by row selection."""
        group = self._group(split)
        found = group.get(DIGESTS)
        names = [FEATURES] + ([DIGESTS] if isinstance(found, h5py.Dataset) else [])
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        with self._reading():
            if hi - lo <= 4 * len(rows) + 256:
                out = [group[name][lo:hi][rows - lo] for name in names]
            else:
                out = [group[name][rows] for name in names]
        return out[0], out[1] if len(out) > 1 else None

    def origin(self, split: str) -> dict | None:
        """{"computed": rows, "reused": {source cache file: rows}} of a split, None if not recorded."""
        group = self._group(split)
        if COMPUTED not in group.attrs:
            return None
        with self._reading():
            return {"computed": int(group.attrs[COMPUTED]), "reused": json.loads(group.attrs[REUSED])}

    def timing(self, split: str) -> dict:
        """Extraction cost of a split: seconds of compute, images read (kept + skipped), images/s."""
        group = self._group(split)
        images = group[FEATURES].shape[0] + group[SKIPPED_PATHS].shape[0]
        seconds = float(group.attrs[SECONDS])
        return {"seconds": seconds, "images": images, "images_per_second": images / seconds if seconds else None}

    def total_timing(self) -> dict:
        """Extraction cost of the whole cache: `timing` summed over its splits."""
        splits = [self.timing(split) for split in self.splits]
        seconds = sum(t["seconds"] for t in splits)
        images = sum(t["images"] for t in splits)
        return {"seconds": seconds, "images": images, "images_per_second": images / seconds if seconds else None}

    def iter_batches(self, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features, labels) row chunks in order, never more than `batch_size` rows in memory."""
        group = self._group(split)
        for start in range(0, group[FEATURES].shape[0], batch_size):
            with self._reading():
                batch = group[FEATURES][start : start + batch_size], group[LABELS][start : start + batch_size]
            yield batch

    def nbytes_in_memory(self, split: str) -> int:
        features = self._group(split)[FEATURES]
        return int(np.prod(features.shape)) * features.dtype.itemsize

    def describe(self) -> dict:
        """The key facts of this cache, for `featpipe cache ls/info`."""
        attrs = self.attrs
        return {
            "path": str(self.path), "key": self.key, "backbone": attrs.get("backbone"),
            "weights": attrs.get("weights"), "image_size": attrs.get("image_size"), "pooling": attrs.get("pooling"),
            "feature_shape": list(self.feature_shape), "dtype": str(self._group(self.splits[0])[FEATURES].dtype),
            "classes": self.classes, "rows": {s: self.n_rows(s) for s in self.splits},
            "skipped": {s: len(self.skipped(s)) for s in self.splits},
            "timing": {s: self.timing(s) for s in self.splits},
            "origin": {s: self.origin(s) for s in self.splits},
            "bytes": self.path.stat().st_size, "dataset": attrs.get("dataset"), "device": attrs.get("device"),
            "versions": attrs.get("versions"), "created": attrs.get("created"),
        }

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_caches(cache_dir: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(finished cache files, unfinished .partial work dirs) in a cache directory."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise FeatpipeError(f"cache directory not found: {cache_dir}")
    def visible(paths):  # not the hidden temporary file of a cache being assembled (featpipe.atomic)
        return sorted(p for p in paths if not p.name.startswith("."))

    return visible(cache_dir.glob("*.h5")), visible(cache_dir.glob("*.h5.partial"))


def non_finite_rows(features: np.ndarray) -> int:
    """How many rows of `features` hold a NaN or an infinity."""
    if not features.size:
        return 0
    return int((~np.isfinite(features.reshape(len(features), -1))).any(axis=1).sum())
