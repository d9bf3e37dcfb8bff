"""Assembly: the finished part files of a work directory -> one self-contained cache file.

A streaming merge: parts are opened one at a time (two files open at most, whatever the number of parts),
features are copied part by part into a chunked dataset of the final file (laid out by featpipe.store, the
format's owner), which is written through featpipe.atomic, so a file with the final name is always complete. Peak disk use is the parts plus
the final file (about twice the feature bytes) until the work directory is removed.

One copy, rather than an HDF5 virtual dataset over the parts, because a cache is handed around: copied to
another node, attached to a report, read by tools that do not follow external links. The copy is sequential
I/O, a small share of the extraction (see bench/bench_scale.py).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import h5py

from featpipe import atomic, store
from featpipe.errors import FeatpipeError
from featpipe.parts import Part, PartFile, plan_parts, shard_parts
from featpipe.workdir import WorkDir


def assemble(workdir: WorkDir) -> Path:
    """Merge every part of the work directory's plan into its final file; the caller holds the key lock."""
    manifest = workdir.manifest()
    plan = workdir.plan()
    missing = workdir.missing(plan)
    if missing:
        raise FeatpipeError(f"cannot assemble {workdir.final_path.name}: {describe_missing(missing, manifest)}")
    final = workdir.final_path
    with atomic.atomic_path(final) as tmp, h5py.File(tmp, "w") as f:
        store.write_header(f, manifest["key"], manifest["attrs"])
        for split in manifest["splits"]:
            start = time.perf_counter()
            group = _merge_split(f, split, [workdir.part_path(p) for p in plan if p.split == split],
                                 manifest["dtype"], manifest.get("compression"))
            # The split's cost includes its share of the assembly.
            group.attrs[store.SECONDS] += time.perf_counter() - start
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


def _merge_split(f: h5py.File, split: str, paths: list[Path], dtype: str, compression: str | None) -> h5py.Group:
    counts, shape, with_digests = [], None, True
    for path in paths:  # pass 1: sizes, one file open at a time
        with PartFile(path) as part:
            counts.append(part.kept)
            if shape is None and part.kept:
                shape = part.feature_shape
            # A part written before digests were kept (a resumed old run): the split gets none, never wrong ones.
            with_digests = with_digests and part.digests() is not None
    if shape is None:
        raise FeatpipeError(f"no image of split {split!r} could be decoded; see the skipped files")
    group = store.create_split(f, split, sum(counts), shape, dtype, compression, digests=with_digests)
    features, labels, paths_out = (group[name] for name in (store.FEATURES, store.LABELS, store.PATHS))
    skipped, seconds, at, computed, reused, recorded = [], 0.0, 0, 0, Counter(), False
    for path, k in zip(paths, counts):  # pass 2: copy, part by part (nothing per row is held in memory)
        with PartFile(path) as part:
            if k:
                features[at : at + k] = part.features().astype(dtype, copy=False)
                labels[at : at + k] = part.labels()
                paths_out[at : at + k] = part.paths()
                if with_digests:
                    group[store.DIGESTS][at : at + k] = part.digests()
            at += k
            seconds += part.seconds
            skipped += part.skipped()
            origin = part.origin
            recorded = recorded or origin is not None
            computed += k if origin is None else origin[0]  # a part from before origins were kept: computed
            reused.update({} if origin is None else origin[1])
    store.finish_split(group, skipped, seconds, computed if recorded else None, dict(reused))
    return group
