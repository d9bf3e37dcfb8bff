"""Assembly: the finished part files of a work directory -> one self-contained cache file.

A streaming merge: parts are opened one at a time (two files open at most, whatever the number of parts),
features are copied part by part into a chunked dataset of the final file, which is written under a temporary
name, fsynced and renamed, so a file with the final name is always complete. Peak disk use is the parts plus
the final file (about twice the feature bytes) until the work directory is removed.

One copy, rather than an HDF5 virtual dataset over the parts, because a cache is handed around: copied to
another node, attached to a report, read by tools that do not follow external links. The copy is sequential
I/O, a small share of the extraction (see bench/bench_scale.py).
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from featpipe.errors import FeatpipeError
from featpipe.parts import STR, Part, plan_parts, shard_parts
from featpipe.store import FORMAT_VERSION
from featpipe.workdir import WorkDir


def assemble(workdir: WorkDir) -> Path:
    """Merge every part of the work directory's plan into its final file; the caller holds the key lock."""
    manifest = workdir.manifest()
    plan = workdir.plan()
    missing = workdir.missing(plan)
    if missing:
        raise FeatpipeError(f"cannot assemble {workdir.final_path.name}: {describe_missing(missing, manifest)}")
    final = workdir.final_path
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            for name, value in manifest["attrs"].items():
                f.attrs[name] = json.dumps(value, default=str)  # every attribute is JSON but these two
            f.attrs["featpipe_format"] = FORMAT_VERSION
            f.attrs["key"] = manifest["key"]
            for split in manifest["splits"]:
                start = time.perf_counter()
                parts = [p for p in plan if p.split == split]
                group = f.create_group(split)
                _merge_split(group, [workdir.part_path(p) for p in parts], manifest["dtype"],
                             manifest.get("compression"))
                # The split's cost includes its share of the assembly.
                group.attrs["seconds"] += time.perf_counter() - start
            f.flush()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise FeatpipeError(f"no space left on device writing {final}") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    workdir.remove()
    return final


def describe_missing(missing: list[Part], manifest: dict) -> str:
    """'3 parts missing: train rows 0-4095 (shard 0/4), ...' naming the shard K/N that owns each part."""
    shards = manifest.get("shards")
    owner = {}
    if shards:
        plan = plan_parts(manifest["splits"], int(manifest["part_rows"]))
        owner = {p: k for k in range(shards) for p in shard_parts(plan, k, shards)}
    names = [f"{p}" + (f" (shard {owner[p]}/{shards})" if p in owner else "") for p in missing[:5]]
    more = f", and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"{len(missing)} part{'s' * (len(missing) != 1)} missing: {', '.join(names)}{more}"


def _merge_split(group: h5py.Group, paths: list[Path], dtype: str, compression: str | None) -> None:
    counts, shape = [], None
    for path in paths:  # pass 1: sizes, one file open at a time
        with h5py.File(path, "r") as part:
            counts.append(part["rows"].shape[0])
            if shape is None and counts[-1]:
                shape = part["features"].shape[1:]
    if shape is None:
        raise FeatpipeError(f"no image of split {group.name.strip('/')!r} could be decoded; see the skipped files")
    n = sum(counts)
    # Fletcher-32 checksums per chunk: a flipped bit on disk is an error on read, not a silently wrong feature.
    features = group.create_dataset("features", shape=(n, *shape), dtype=dtype, chunks=_chunks(shape, dtype, n),
                                    compression=compression, fletcher32=True)
    labels = group.create_dataset("labels", shape=(n,), dtype=np.int32, fletcher32=True)
    paths_out = group.create_dataset("paths", shape=(n,), dtype=STR)
    skipped_paths, reasons, seconds, at = [], [], 0.0, 0
    for path, k in zip(paths, counts):  # pass 2: copy, part by part (nothing per row is held in memory)
        with h5py.File(path, "r") as part:
            if k:
                features[at : at + k] = part["features"][()].astype(dtype, copy=False)
                labels[at : at + k] = part["labels"][()]
                paths_out[at : at + k] = part["paths"][()]
            at += k
            seconds += float(part.attrs["seconds"])
            skipped_paths += part["skipped_paths"].asstr()[()].tolist()
            reasons += part["skipped_reasons"].asstr()[()].tolist()
    group.create_dataset("skipped_paths", data=skipped_paths, dtype=STR)
    group.create_dataset("skipped_reasons", data=reasons, dtype=STR)
    group.attrs["seconds"] = seconds


def _chunks(shape: tuple[int, ...], dtype: str, n: int) -> tuple[int, ...]:
    # About 1 MiB per chunk: big enough for fast sequential reads, small enough for row batches.
    row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return (max(1, min(n, (1 << 20) // max(1, row_bytes))), *shape)
