"""Incremental extraction: rows of earlier caches reused by image content, not by position.

Two extractions whose facts agree on the model side (`model_key`: everything in the cache key but the dataset
— the base and its weights, image size, crop, decode rule, pooling, dtypes, precision, library versions) give
an image the same features wherever it lies, so a row whose image bytes are known (featpipe.pipeline.
content_digest) is copied from the cache that holds it instead of computed again. A moved, renamed, re-split
or relabelled image is found by its digest; an image changed in place has a new digest and is computed.

Where rows come from: the finished caches of the cache directory plus any named with ``--reuse``. An index
``reuse-index-<model key>.npz`` beside the caches maps digest -> (source cache, split, row); it records the
name, size and time of every cache file it looked at and is rebuilt when they differ (a cache added, replaced
or removed), written atomically. Caches made before digests were kept, or by another model side (other library
versions included), are never sources. A row is copied only if the source still holds that digest at that row
(checked on the copy); a source that fails to read is refused for the rest of the run, with a warning, and its
rows are computed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from featpipe import atomic
from featpipe.errors import FeatpipeError
from featpipe.provenance import key_digest
from featpipe.store import DIGEST_SIZE, FeatureCache, list_caches

log = logging.getLogger(__name__)

INDEX_PREFIX = "reuse-index-"
INDEX_FORMAT = 1


def model_key(facts: dict) -> str:
    """The digest of the model side of an extraction's facts: all of them but the dataset's."""
    return key_digest({name: value for name, value in facts.items() if name != "dataset"})


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def build_index(cache_dir: Path, facts: dict, extra: list[Path] = ()) -> Path | None:
    """The index of the rows an extraction of `facts` may reuse, from the caches in `cache_dir` and `extra`
    (None when there is no cache at all); the existing index file is kept while none of the cache files it
    looked at has changed."""
    model = model_key(facts)
    named = []
    for path in extra:
        if not Path(path).is_file():
            raise FeatpipeError(f"--reuse: no cache file at {path}")
        named.append(Path(path).resolve())
    found = list_caches(cache_dir)[0] if cache_dir.is_dir() else []
    candidates = list(dict.fromkeys(named + [p.resolve() for p in found]))  # named first: they win ties
    if not candidates:
        return None
    scanned = {str(p): _stamp(p) for p in candidates}
    index_path = cache_dir / f"{INDEX_PREFIX}{model[:16]}.npz"
    meta = _read_meta(index_path)
    if meta and meta["model"] == model and meta["scanned"] == scanned:
        return index_path
    sources, tables = [], []
    for path in candidates:
        table = _rows_of(path, model, len(sources), warn=path in named)
        if table is not None:
            sources.append(table[0])
            tables.append(table[1])
    if tables:
        digests, source, split, row = (np.concatenate(column) for column in zip(*tables))
    else:
        digests, source, split, row = (np.zeros((0, DIGEST_SIZE), np.uint8), np.zeros(0, np.int32),
                                       np.zeros(0, np.int32), np.zeros(0, np.int64))
    # One entry per digest (the first: a named cache, then by file name); duplicates hold the same features.
    _, first = np.unique(np.ascontiguousarray(digests).view(f"V{DIGEST_SIZE}").ravel(), return_index=True)
    first = np.sort(first)
    meta = {"format": INDEX_FORMAT, "model": model, "scanned": scanned, "sources": sources}
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(index_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), digests=digests[first], source=source[first],
                 split=split[first], row=row[first])
    return index_path


def _read_meta(path: Path) -> dict | None:
    try:
        with np.load(path) as index:
            meta = json.loads(str(index["meta"]))
        return meta if meta.get("format") == INDEX_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _rows_of(path: Path, model: str, number: int, warn: bool):
    """(source record, (digests, source numbers, split numbers, rows)) of a cache of the same model side,
    None for any other (with a warning when the user named it)."""
    try:
        with FeatureCache(path) as cache:
            if model_key(cache.facts) != model:
                if warn:
                    log.warning("not reusing rows of %s: it was made by another base, options or library "
                                "versions", path)
                return None
            splits, parts = [], []
            for split in cache.splits:
                digests = cache.digests(split)
                if digests is not None:
                    splits.append(split)
                    parts.append(digests)
            if not parts:
                if warn:
                    log.warning("not reusing rows of %s: it was made before featpipe kept image digests", path)
                return None
            record = {"path": str(path), "key": cache.key, "splits": splits}
    except FeatpipeError as e:
        log.warning("not reusing rows of %s: %s", path, e)
        return None
    columns = (np.concatenate(parts),
               np.full(sum(len(p) for p in parts), number, np.int32),
               np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(parts)]),
               np.concatenate([np.arange(len(p), dtype=np.int64) for p in parts]))
    return record, columns


class Reuse:
    """The rows one run may copy (an index file from `build_index`, or None: none), and the copying.

    `find(digest)` -> an entry or None; `copy(entries)` -> (features, ok mask) read from the sources. Sources
    are opened once each, on first use, and closed by `close`.
    """

    def __init__(self, index_path: str | os.PathLike | None = None):
        self._entry: dict[bytes, int] = {}
        self._open: dict[int, FeatureCache] = {}
        self.refused: set[int] = set()
        self.sources: list[dict] = []
        if index_path is None:
            return
        try:
            with np.load(index_path) as index:
                meta = json.loads(str(index["meta"]))
                digests = index["digests"]
                self._source, self._split, self._row = index["source"], index["split"], index["row"]
        except (OSError, ValueError, KeyError) as e:
            log.warning("not reusing rows: the index %s cannot be read (%s)", index_path, type(e).__name__)
            return
        self.sources = meta["sources"]
        self._entry = {digest.tobytes(): i for i, digest in enumerate(digests)}

    @property
    def empty(self) -> bool:
        """No row can be copied: every image goes through the base."""
        return not self._entry

    def find(self, digest: bytes) -> int | None:
        entry = self._entry.get(digest)
        return None if entry is None or int(self._source[entry]) in self.refused else entry

    def name(self, entry: int) -> str:
        return Path(self.sources[int(self._source[entry])]["path"]).name

    def copy(self, entries: list[int], digests: list[bytes]) -> tuple[list[np.ndarray | None], list[str]]:
        """Each entry's features (None where its source failed: the caller computes that row) and source name.
        A source is used only if it still has its key and the expected digest at each row."""
        out: list[np.ndarray | None] = [None] * len(entries)
        names = [self.name(e) for e in entries]
        groups: dict[tuple[int, int], list[int]] = {}
        for at, entry in enumerate(entries):
            groups.setdefault((int(self._source[entry]), int(self._split[entry])), []).append(at)
        for (source, split), ats in groups.items():
            if source in self.refused:
                continue
            rows = np.array([self._row[entries[a]] for a in ats], np.int64)
            order = np.argsort(rows, kind="stable")
            try:
                cache = self._cache(source)
                features, found = cache.read_rows(self.sources[source]["splits"][split], rows[order])
                expected = np.frombuffer(b"".join(digests[ats[i]] for i in order), np.uint8).reshape(-1, DIGEST_SIZE)
                if found is None or not np.array_equal(found, expected):
                    raise FeatpipeError("its rows no longer hold the images the index says")
            except FeatpipeError as e:
                self._refuse(source, str(e))
                continue
            for i, a in enumerate(np.asarray(ats)[order]):
                out[a] = features[i]
        return out, names

    def _cache(self, source: int) -> FeatureCache:
        if source not in self._open:
            record = self.sources[source]
            cache = FeatureCache(record["path"])
            if cache.key != record["key"]:
                cache.close()
                raise FeatpipeError("it was replaced since it was indexed")
            self._open[source] = cache
        return self._open[source]

    def _refuse(self, source: int, why: str) -> None:
        self.refused.add(source)
        cache = self._open.pop(source, None)
        if cache is not None:
            cache.close()
        log.warning("not reusing rows of %s (%s); computing them instead", self.sources[source]["path"], why)

    def close(self) -> None:
        for cache in self._open.values():
            cache.close()
        self._open.clear()
