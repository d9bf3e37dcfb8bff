"""Run a frozen base once over each split of a dataset and store the features in the HDF5 cache."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import featpipe
from featpipe.backbones import Backbone
from featpipe.data import ImageFolder
from featpipe.errors import FeatpipeError
from featpipe.pipeline import batched, indexed_images, unreadable_reason
from featpipe.progress import Progress
from featpipe.store import CacheWriter, FeatureCache, cache_file_name, cache_key

POOLINGS = ("avg", "max", "none")
DTYPES = ("float32", "float16")
COMPRESSIONS = ("none", "gzip", "lzf")


@dataclass
class ExtractResult:
    """What an extraction produced (or found already cached)."""

    path: Path
    key: str
    cached: bool
    rows: dict[str, int]
    skipped: dict[str, list[tuple[str, str]]]
    seconds: float
    images_per_second: float | None

    def summary(self) -> dict:
        return {
            "cache": str(self.path), "key": self.key, "cached": self.cached, "rows": self.rows,
            "skipped": {split: len(items) for split, items in self.skipped.items()},
            "seconds": round(self.seconds, 3),
            "images_per_second": None if self.images_per_second is None else round(self.images_per_second, 1),
        }


def versions() -> dict:
    # Read keras-hub's version from its metadata: importing it costs ~1 s when the base is not a hub preset.
    return {"featpipe": featpipe.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_hub": importlib.metadata.version("keras-hub")}


def extraction_facts(data: ImageFolder, backbone: Backbone, splits: list[str], pooling: str, dtype: str,
                     crop_to_aspect_ratio: bool, content_hash: bool) -> dict:
    """Everything that determines the cached features; its digest is the cache key."""
    return {
        "dataset": {"fingerprint": data.fingerprint(content=content_hash), "classes": list(data.classes),
                    "splits": {s: len(data.splits[s]) for s in splits}},
        "backbone": backbone.identity(),
        "image_size": list(backbone.image_size),
        "crop_to_aspect_ratio": crop_to_aspect_ratio,
        "pooling": pooling,
        "dtype": dtype,
        "compute_dtype": keras.mixed_precision.global_policy().compute_dtype,
        "versions": versions(),
    }


def extract(
    data: ImageFolder,
    backbone: Backbone,
    cache_dir: str | os.PathLike = "cache",
    *,
    splits: list[str] | None = None,
    pooling: str = "avg",
    dtype: str = "float32",
    batch_size: int = 32,
    compression: str = "none",
    crop_to_aspect_ratio: bool = False,
    content_hash: bool = False,
    device: str = "",
    progress: bool = True,
) -> ExtractResult:
    """Extract features for `splits` (default: all) unless this exact extraction is cached already."""
    splits = _check_options(data, splits, pooling, dtype, batch_size, compression)
    facts = extraction_facts(data, backbone, splits, pooling, dtype, crop_to_aspect_ratio, content_hash)
    key = cache_key(facts)
    label = f"{backbone.label}-{backbone.image_size[0]}-{pooling}"
    final = Path(cache_dir) / cache_file_name(label, key)
    if final.exists():
        return _result(final, cached=True)
    with CacheWriter(final, key, shard_rows=batch_size) as writer:
        if final.exists():  # another process finished it while we were starting
            return _result(final, cached=True)
        forward = compiled_forward(backbone.feature_model(pooling))
        for split in splits:
            _extract_split(writer, forward, data, split, backbone.image_size, crop_to_aspect_ratio,
                           batch_size, dtype, progress)
        writer.finalize(
            {s: list(data.splits[s].paths) for s in splits},
            _attributes(data, backbone, facts, content_hash, device),
            dtype,
            None if compression == "none" else compression,
        )
    return _result(final, cached=False)


def _check_options(data, splits, pooling, dtype, batch_size, compression) -> list[str]:
    splits = list(splits or data.splits)
    missing = [s for s in splits if s not in data.splits]
    if missing:
        raise FeatpipeError(f"dataset {data.root} has no split {', '.join(missing)} (it has {', '.join(data.splits)})")
    for name, value, choices in (("pooling", pooling, POOLINGS), ("dtype", dtype, DTYPES),
                                 ("compression", compression, COMPRESSIONS)):
        if value not in choices:
            raise FeatpipeError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    if batch_size < 1:
        raise FeatpipeError(f"batch size must be positive, got {batch_size}")
    return splits


def compiled_forward(model: keras.Model):
    """One traced graph for every batch size: calling the model, not predict() in a loop."""
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    return tf.function(lambda images: model(images, training=False), input_signature=[spec])


def _extract_split(writer: CacheWriter, forward, data: ImageFolder, split: str, size, crop: bool,
                   batch_size: int, dtype: str, progress: bool) -> None:
    files, n = data.files(split), len(data.splits[split])
    done = writer.done_shards(split)
    todo = [start for start in range(0, n, writer.shard_rows) if start not in done]
    if not todo:
        return
    rows = np.concatenate([np.arange(s, min(s + writer.shard_rows, n)) for s in todo])
    label = f"{split} (resuming: {n - len(rows)} of {n} images already done)" if done else split
    meter = Progress(len(rows), label) if progress else None
    shards = _ShardBuffer(writer, split, files, np.asarray(data.splits[split].labels), todo, meter)
    for images, batch_rows in batched(indexed_images(files, size, crop, rows), batch_size):
        shards.add(forward(images).numpy().astype(dtype), batch_rows.numpy())
    shards.close()
    if meter:
        meter.close()


class _ShardBuffer:
    """Collects (features, row) batches and writes each shard as soon as all its rows have gone by.

    Rows arrive in order, minus the unreadable ones, so a shard is complete once a row at or past its
    last row has been seen (or the stream has ended); the rows it lacks are the skipped ones.
    """

    def __init__(self, writer: CacheWriter, split: str, files: list[str], labels: np.ndarray,
                 todo: list[int], meter: Progress | None):
        self.writer, self.split, self.files, self.labels, self.meter = writer, split, files, labels, meter
        self.todo = deque(todo)
        self.feats: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.clock = time.perf_counter()

    def _end(self, start: int) -> int:
        return min(start + self.writer.shard_rows, len(self.files))

    def add(self, feats: np.ndarray, rows: np.ndarray) -> None:
        self.feats.append(feats)
        self.rows.append(rows)
        while self.todo and rows[-1] >= self._end(self.todo[0]) - 1:
            self._flush(self.todo.popleft())

    def close(self) -> None:
        while self.todo:  # trailing shards whose last images were all unreadable
            self._flush(self.todo.popleft())

    def _flush(self, start: int) -> None:
        end = self._end(start)
        feats = np.concatenate(self.feats) if self.feats else np.zeros((0,), np.float32)
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0,), np.int64)
        take = int(np.searchsorted(rows, end))
        skipped = sorted(set(range(start, end)) - set(rows[:take].tolist()))
        now = time.perf_counter()
        self.writer.write_shard(
            self.split, start, feats[:take], self.labels[rows[:take]], rows[:take],
            [(r, unreadable_reason(self.files[r])) for r in skipped], seconds=now - self.clock,
        )
        self.clock = now
        self.feats, self.rows = [feats[take:]], [rows[take:]]
        if self.meter:
            self.meter.update(end - start)


def _attributes(data: ImageFolder, backbone: Backbone, facts: dict, content_hash: bool, device: str) -> dict:
    return {
        "facts": facts,
        "classes": list(data.classes),
        "backbone": backbone.spec,
        "weights": backbone.weights,
        "pretrained": backbone.pretrained,
        "image_size": list(backbone.image_size),
        "pooling": facts["pooling"],
        "dataset": {"root": str(data.root.resolve()), "val_fraction": data.val_fraction, "seed": data.seed,
                    "content_hash": content_hash, "fingerprint": facts["dataset"]["fingerprint"]},
        "versions": facts["versions"],
        "device": device or ("GPU" if tf.config.list_logical_devices("GPU") else "CPU"),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _result(path: Path, cached: bool) -> ExtractResult:
    with FeatureCache(path) as cache:
        timing = cache.total_timing()
        return ExtractResult(
            path=path, key=cache.key, cached=cached,
            rows={s: cache.n_rows(s) for s in cache.splits},
            skipped={s: cache.skipped(s) for s in cache.splits},
            seconds=timing["seconds"], images_per_second=timing["images_per_second"],
        )
