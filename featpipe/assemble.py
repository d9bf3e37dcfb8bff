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
import numpy as np

from featpipe import atomic, store
from featpipe.errors import FeatpipeError
from featpipe.parts import Part, PartFile, plan_parts, shard_owners
from featpipe.workdir import WorkDir


def assemble(workdir: WorkDir) -> Path:
    """Merge every part of the work directory's plan into its final file; the caller holds the key lock.

    The merged file is checked (featpipe.store's reader, the rows the plan expects) before it takes its final
    name and before the parts are removed: a merge that goes wrong never costs the parts.
    """
    manifest = workdir.manifest()
    plan = workdir.plan()
    missing = workdir.missing(plan)
    if missing:
        raise FeatpipeError(f"cannot assemble {workdir.final_path.name}: {describe_missing(missing, manifest)}")
    final = workdir.final_path
    with atomic.atomic_path(final) as tmp:
        with h5py.File(tmp, "w") as f:
            store.write_header(f, manifest["key"], manifest["attrs"])
            for split in manifest["splits"]:
                start = time.perf_counter()
                group = _merge_split(f, split, [p for p in plan if p.split == split], workdir,
                                     manifest["dtype"], manifest.get("compression"))
                # The split's cost includes its share of the assembly.
                group.attrs[store.SECONDS] += time.perf_counter() - start
        _check_merged(tmp, manifest, workdir)
    workdir.remove()
    return final


def _check_merged(path: Path, manifest: dict, workdir: WorkDir) -> None:
    """Read the merged file back as a cache: its key, and every planned row either kept or skipped."""
    try:
        with store.FeatureCache(path) as cache:
            problem = None if cache.key == manifest["key"] else "another key"
            for split, rows in manifest["splits"].items():
                if problem is None and cache.n_rows(split) + len(cache.skipped(split)) != rows:
                    problem = f"split {split!r} does not have its {rows} rows"
    except FeatpipeError as e:
        problem = str(e)
    if problem:
        raise FeatpipeError(f"the assembled cache failed its check ({problem}); nothing was removed: "
                            f"the parts are still in {workdir.path}")


def describe_missing(missing: list[Part], manifest: dict) -> str:
    """'3 parts missing: train rows 0-4095 (shard 0/4), ...' naming the shard K/N that owns each part."""
    shards = manifest.get("shards")
    owner = {}
    if shards:
        plan = plan_parts(manifest["splits"], int(manifest["part_rows"]))
        owner = dict(zip(plan, shard_owners(plan, shards)))
    names = [f"{p}" + (f" (shard {owner[p]}/{shards})" if p in owner else "") for p in missing[:5]]
    more = f", and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"{len(missing)} part{'s' * (len(missing) != 1)} missing: {', '.join(names)}{more}"


def _merge_split(f: h5py.File, split: str, parts: list[Part], workdir: WorkDir, dtype: str,
                 compression: str | None) -> h5py.Group:
    counts, shape, with_digests = [], None, True
    for part in parts:  # pass 1: sizes, one file open at a time
        with PartFile(workdir.part_path(part)) as data:
            counts.append(data.kept)
            if data.kept and shape is not None and data.feature_shape != shape:
                _reject(workdir, part, f"its features have shape {data.feature_shape}, the others {shape}")
            if shape is None and data.kept:
                shape = data.feature_shape
            # A part written before digests were kept (a resumed old run): the split gets none, never wrong ones.
            with_digests = with_digests and data.digests() is not None
    if shape is None:
        raise FeatpipeError(f"no image of split {split!r} could be decoded; see the skipped files")
    group = store.create_split(f, split, sum(counts), shape, dtype, compression, digests=with_digests)
    features, labels, paths_out = (group[name] for name in (store.FEATURES, store.LABELS, store.PATHS))
    skipped, seconds, at, computed, reused, recorded = [], 0.0, 0, 0, Counter(), False
    for part, k in zip(parts, counts):  # pass 2: copy, part by part (nothing per row is held in memory)
        with PartFile(workdir.part_path(part)) as data:
            if k:
                with np.errstate(over="ignore"):  # a float16 overflow is reported below, as a part to redo
                    block = data.features().astype(dtype, copy=False)
                bad = store.non_finite_rows(block)
                if bad:
                    _reject(workdir, part, f"{bad} of its {k} rows have non-finite features (NaN or inf)")
                features[at : at + k] = block
                labels[at : at + k] = data.labels()
                paths_out[at : at + k] = data.paths()
                if with_digests:
                    group[store.DIGESTS][at : at + k] = data.digests()
            at += k
            seconds += data.seconds
            skipped += data.skipped()
            origin = data.origin
            recorded = recorded or origin is not None
            computed += k if origin is None else origin[0]  # a part from before origins were kept: computed
            reused.update({} if origin is None else origin[1])
    store.finish_split(group, skipped, seconds, computed if recorded else None, dict(reused))
    return group


def _reject(workdir: WorkDir, part: Part, why: str) -> None:
    """A part found unusable during the merge: removed (a rerun redoes it), the merge stopped, the rest kept."""
    workdir.part_path(part).unlink(missing_ok=True)
    raise FeatpipeError(f"the part file of {part} was removed: {why}; the other parts are kept, "
                        "run the extract command again to redo it")
