"""The HDF5 feature cache: keys, the crash-safe shard writer, and the reader the heads use.

One final file per cache key, ``<cache_dir>/<name>-<key16>.h5``::

    attrs: featpipe_format, key, facts (JSON), classes (JSON), versions, timing, device, created
    /<split>/features         (rows, *feature_shape)   chunked, optionally compressed
    /<split>/labels           (rows,) int32
    /<split>/paths            (rows,) UTF-8, relative to the dataset root
    /<split>/skipped_paths    (k,) UTF-8; /<split>/skipped_reasons (k,) UTF-8

While a run is in progress its work lives in ``<final>.partial/``: a manifest and one small HDF5 shard per
flushed batch of source rows, each written under a temporary name and renamed when complete. A killed run
resumes from the shards it finds; the final file is assembled from them under a temporary name and renamed
into place, so a file with the final name is always complete. Shards share one schema, so several workers
could write disjoint row ranges of a split and a virtual dataset could read them as one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from featpipe.errors import FeatpipeError

FORMAT_VERSION = 1
STR = h5py.string_dtype("utf-8")


def cache_key(facts: dict) -> str:
    """A digest of everything that determines the features."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def cache_file_name(label: str, key: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_.")[:80] or "features"
    return f"{slug}-{key[:16]}.h5"


# --- writing ---------------------------------------------------------------------------------------


class CacheWriter:
    """Writes one cache key's splits as shards, then assembles the final file.

    Use as a context manager: it holds an exclusive lock for the key, so a second process asking for the
    same key gets a clear error instead of interleaving writes.
    """

    def __init__(self, final_path: str | os.PathLike, key: str, shard_rows: int):
        self.final_path = Path(final_path)
        self.partial_dir = Path(f"{self.final_path}.partial")
        self.lock_path = Path(f"{self.final_path}.lock")
        self.key = key
        self.shard_rows = shard_rows
        self._lock_fd: int | None = None

    def __enter__(self) -> "CacheWriter":
        try:
            self.final_path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            raise FeatpipeError(f"cannot write to cache directory {self.final_path.parent}: {e.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise FeatpipeError(
                f"another featpipe process is writing {self.final_path.name} (lock held on {self.lock_path}); "
                "wait for it to finish, then run again to reuse its result"
            ) from None
        self._open_manifest()
        return self

    def __exit__(self, *exc) -> None:
        if self.final_path.exists():  # finished (by us, or by another process first): the work files go
            shutil.rmtree(self.partial_dir, ignore_errors=True)
            self.lock_path.unlink(missing_ok=True)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    def _open_manifest(self) -> None:
        """Reuse the shard size of an interrupted run, so its shards line up with the new ones."""
        manifest = self.partial_dir / "manifest.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            if data.get("key") == self.key:
                self.shard_rows = int(data["shard_rows"])
                return
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.partial_dir.glob("*.h5"):
            stale.unlink()
        _atomic_write_text(manifest, json.dumps({"key": self.key, "shard_rows": self.shard_rows}))

    def done_shards(self, split: str) -> set[int]:
        """Start rows of the shards of `split` already written (by this or an interrupted run)."""
        return {int(p.stem.rsplit("-", 1)[1]) for p in self.partial_dir.glob(f"{split}-*.h5")}

    def write_shard(self, split: str, start: int, features: np.ndarray, labels: np.ndarray,
                    rows: np.ndarray, skipped: list[tuple[int, str]], seconds: float) -> None:
        """One complete shard: rows [start, start + shard_rows) of the split, minus the skipped ones.

        `seconds` is the compute it took, summed at the end so that resumed runs report their full cost.
        """
        path = self.partial_dir / f"{split}-{start:010d}.h5"
        tmp = path.with_suffix(".tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["seconds"] = seconds
            f.create_dataset("features", data=features)
            f.create_dataset("labels", data=labels.astype(np.int32))
            f.create_dataset("rows", data=rows.astype(np.int64))
            f.create_dataset("skipped_rows", data=np.array([r for r, _ in skipped], np.int64))
            f.create_dataset("skipped_reasons", data=[reason for _, reason in skipped], dtype=STR)
        os.replace(tmp, path)

    def finalize(self, splits: dict[str, list[str]], attrs: dict, dtype: str, compression: str | None) -> Path:
        """Merge the shards of every split into the final file (temporary name, then rename)."""
        tmp = self.final_path.with_name(self.final_path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = json.dumps(value, default=str)  # every attribute is JSON but these two
            f.attrs["featpipe_format"] = FORMAT_VERSION
            f.attrs["key"] = self.key
            for split, paths in splits.items():
                self._merge_split(f.create_group(split), split, paths, dtype, compression)
        os.replace(tmp, self.final_path)
        return self.final_path

    def _merge_split(self, group: h5py.Group, split: str, paths: list[str], dtype: str, compression) -> None:
        shards = sorted(self.partial_dir.glob(f"{split}-*.h5"))
        with _open_all(shards) as opened:
            n = sum(s["rows"].shape[0] for s in opened)
            shape = _feature_shape(opened)
            features = group.create_dataset(
                "features", shape=(n, *shape), dtype=dtype, chunks=_chunks(shape, dtype, n),
                compression=compression,
            )
            labels, rows, skipped_rows, reasons, at = [], [], [], [], 0
            group.attrs["seconds"] = float(sum(shard.attrs["seconds"] for shard in opened))
            for shard in opened:
                k = shard["rows"].shape[0]
                if k:
                    features[at : at + k] = shard["features"][()].astype(dtype)
                at += k
                labels.append(shard["labels"][()])
                rows.append(shard["rows"][()])
                skipped_rows.append(shard["skipped_rows"][()])
                reasons += [r.decode() if isinstance(r, bytes) else r for r in shard["skipped_reasons"][()]]
        group.create_dataset("labels", data=np.concatenate(labels).astype(np.int32))
        group.create_dataset("paths", data=[paths[i] for i in np.concatenate(rows)], dtype=STR)
        group.create_dataset("skipped_paths", data=[paths[i] for i in np.concatenate(skipped_rows)], dtype=STR)
        group.create_dataset("skipped_reasons", data=reasons, dtype=STR)


@contextmanager
def _open_all(paths: list[Path]):
    files = [h5py.File(p, "r") for p in paths]
    try:
        yield files
    finally:
        for f in files:
            f.close()


def _feature_shape(shards: list[h5py.File]) -> tuple[int, ...]:
    for shard in shards:
        if shard["rows"].shape[0]:
            return shard["features"].shape[1:]
    raise FeatpipeError("no image of this split could be decoded; see the skipped files")


def _chunks(shape: tuple[int, ...], dtype: str, n: int) -> tuple[int, ...]:
    # About 1 MiB per chunk: big enough for fast sequential reads, small enough for row batches.
    row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return (max(1, min(n, (1 << 20) // max(1, row_bytes))), *shape)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- reading ---------------------------------------------------------------------------------------


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
        self.key: str = self._file.attrs["key"]
        self.facts: dict = self._json_attr("facts")
        self.classes: list[str] = self._json_attr("classes")

    def _json_attr(self, name: str):
        return json.loads(self._file.attrs[name]) if name in self._file.attrs else None

    @property
    def attrs(self) -> dict:
        """Every file attribute, decoded."""
        return {name: self._json_attr(name) for name in self._file.attrs if name not in ("key", "featpipe_format")}

    @property
    def splits(self) -> list[str]:
        return [s for s in ("train", "validation", "test") if s in self._file] + sorted(
            s for s in self._file if s not in ("train", "validation", "test")
        )

    def _group(self, split: str) -> h5py.Group:
        if split not in self._file:
            raise FeatpipeError(f"{self.path.name} has no {split!r} split (it has {', '.join(self.splits) or 'none'})")
        return self._file[split]

    def n_rows(self, split: str) -> int:
        return self._group(split)["features"].shape[0]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self._group(self.splits[0])["features"].shape[1:]

    def features(self, split: str) -> np.ndarray:
        return self._group(split)["features"][()]

    def labels(self, split: str) -> np.ndarray:
        return self._group(split)["labels"][()]

    def paths(self, split: str) -> list[str]:
        return self._group(split)["paths"].asstr()[()].tolist()

    def skipped(self, split: str) -> list[tuple[str, str]]:
        group = self._group(split)
        return list(zip(group["skipped_paths"].asstr()[()].tolist(), group["skipped_reasons"].asstr()[()].tolist()))

    def timing(self, split: str) -> dict:
        """Extraction cost of a split: seconds of compute, images read (kept + skipped), images/s."""
        group = self._group(split)
        images = group["features"].shape[0] + group["skipped_paths"].shape[0]
        seconds = float(group.attrs["seconds"])
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
        for start in range(0, group["features"].shape[0], batch_size):
            yield group["features"][start : start + batch_size], group["labels"][start : start + batch_size]

    def nbytes_in_memory(self, split: str) -> int:
        features = self._group(split)["features"]
        return int(np.prod(features.shape)) * features.dtype.itemsize

    def describe(self) -> dict:
        """The key facts of this cache, for `featpipe cache ls/info`."""
        attrs = self.attrs
        return {
            "path": str(self.path), "key": self.key, "backbone": attrs.get("backbone"),
            "weights": attrs.get("weights"), "image_size": attrs.get("image_size"), "pooling": attrs.get("pooling"),
            "feature_shape": list(self.feature_shape), "dtype": str(self._group(self.splits[0])["features"].dtype),
            "classes": self.classes, "rows": {s: self.n_rows(s) for s in self.splits},
            "skipped": {s: len(self.skipped(s)) for s in self.splits},
            "timing": {s: self.timing(s) for s in self.splits},
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
    return sorted(cache_dir.glob("*.h5")), sorted(cache_dir.glob("*.h5.partial"))
