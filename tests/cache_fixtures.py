"""Finished cache files from arrays, written the way extraction writes them: part files, then assembly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featpipe.assemble import assemble
from featpipe.parts import Part, PartData, write_part
from featpipe.workdir import WorkDir


def part_data(split: str, start: int, features: np.ndarray, labels, skip=(), seconds: float = 0.5) -> PartData:
    """Part [start, start + len(features)) of `split`, minus the rows in `skip` (recorded as empty files)."""
    stop = start + len(features)
    keep = np.array([r for r in range(start, stop) if r not in skip], np.int64)
    skipped = [r for r in range(start, stop) if r in skip]
    return PartData(
        part=Part(split, start, stop), features=features[keep - start], labels=np.asarray(labels)[keep - start],
        rows=keep, paths=[f"{split}/c/{r}.jpg" for r in keep], skipped_rows=np.asarray(skipped, np.int64),
        skipped_paths=[f"{split}/c/{r}.jpg" for r in skipped], skipped_reasons=["empty file"] * len(skipped),
        seconds=seconds,
    )


def manifest(key: str, splits: dict[str, int], part_rows: int, attrs: dict, dtype: str = "float32",
             compression: str | None = None, shards: int | None = None) -> dict:
    attrs = {"classes": ["a", "b"], **attrs}  # a manifest names its classes (featpipe.workdir checks it)
    return {"key": key, "splits": splits, "part_rows": part_rows, "attrs": attrs, "dtype": dtype,
            "compression": compression, "shards": shards}


def write_cache(path: Path, key: str, data: dict, attrs: dict, part_rows: int = 10_000, seconds: float = 2.0,
                dtype: str = "float32", compression: str | None = None) -> Path:
    """{split: (features, labels)} -> a finished cache file at `path`; rows are named <split>/c/<row>.jpg."""
    workdir = WorkDir(path)
    workdir.open(manifest(key, {s: len(y) for s, (_, y) in data.items()}, part_rows, attrs, dtype, compression))
    for split, (features, labels) in data.items():
        for start in range(0, len(labels), part_rows):
            stop = min(start + part_rows, len(labels))
            write_part(workdir.path, key, part_data(split, start, features[start:stop], labels[start:stop],
                                                    seconds=seconds * (stop - start) / len(labels)))
    return assemble(workdir)
