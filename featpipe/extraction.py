"""Run a frozen base once over each split of a dataset and store the features in the HDF5 cache.

The work is a list of parts (featpipe.parts: contiguous row ranges of a split). `plan_extraction` resolves
the options into an `Extraction` (its key, its files; `to_json`/`from_json` for other processes); `extract`
plans the parts, hands the missing ones to an engine — this process (`InProcessEngine`), worker processes
(featpipe.distribute) or a Ray cluster (featpipe.ray_engine), chosen by featpipe.engines.make_engine — and
assembles the cache (featpipe.assemble). `extract_shard` runs one slice K/N of the parts and stops, for job
arrays; `merge` assembles what they wrote. Every engine ends in `run_parts`, the one place parts are run: the
reader (tf.data decode) -> mapper (one compiled forward call) -> writer (a background thread) loop. It is
also where rows are reused (featpipe.reuse): the reader digests every image's bytes, and those an earlier cache
of the same model side holds skip the decode and the base and are copied from it — the same for every engine.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from itertools import chain, groupby
from pathlib import Path

import numpy as np
import tensorflow as tf

from featpipe import runtime
from featpipe.assemble import assemble, describe_missing
from featpipe.backbones import Backbone
from featpipe.choices import COMPRESSIONS, DTYPES, POOLINGS
from featpipe.data import ImageFolder
from featpipe.distribute import available_cores
from featpipe.errors import ArgumentError, FeatpipeError
from featpipe.low_priority import iterate_below
from featpipe.model_parts import inference_forward
from featpipe.parts import Part, PartData, part_rows_for, shard_parts
from featpipe.pipeline import DECODE_RULE, batched, indexed_images, unreadable_reason
from featpipe.progress import Progress
from featpipe.provenance import key_digest, timestamp, versions
from featpipe.reuse import Reuse, build_index
from featpipe.store import FeatureCache, cache_file_name, non_finite_rows
from featpipe.workdir import WorkDir
from featpipe.writer import PartWriter

log = logging.getLogger(__name__)
# Decoded images a CPU extraction may hold while its base is being prepared (see _forward_rows).
EARLY_BYTES = 256 << 20


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
    # This run's own figures (empty when cached): seconds the background writer wrote and the forward loop
    # waited for it; seconds of assembly.
    stats: dict = field(default_factory=dict)
    # Where each split's rows came from: {"computed": rows, "reused": {source cache file: rows}} (None: a
    # cache made before this was recorded).
    origin: dict[str, dict | None] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "cache": str(self.path), "key": self.key, "cached": self.cached, "rows": self.rows,
            "computed": {s: o["computed"] for s, o in self.origin.items() if o is not None},
            "reused": {s: sum(o["reused"].values()) for s, o in self.origin.items() if o is not None},
            "skipped": {split: len(items) for split, items in self.skipped.items()},
            "seconds": round(self.seconds, 3),
            "images_per_second": None if self.images_per_second is None else round(self.images_per_second, 1),
        }


@dataclass
class ShardResult:
    """What one shard K/N of an extraction did, and what the whole extraction still lacks."""

    path: Path
    key: str
    shard: tuple[int, int]
    parts: int
    rows: int
    missing: list[Part]
    cached: bool = False

    def summary(self) -> dict:
        return {"cache": str(self.path), "key": self.key, "shard": f"{self.shard[0]}/{self.shard[1]}",
                "parts_written": self.parts, "rows_written": self.rows, "parts_missing": len(self.missing),
                "cached": self.cached}


def extraction_facts(data: ImageFolder, backbone: Backbone, splits: list[str], pooling: str, dtype: str,
                     crop_to_aspect_ratio: bool, content_hash: bool, compute_dtype: str) -> dict:
    """Everything that determines the cached features; its digest is the cache key."""
    return {
        "dataset": {"fingerprint": data.fingerprint(content=content_hash), "classes": list(data.classes),
                    "splits": {s: len(data.splits[s]) for s in splits}},
        "backbone": backbone.identity(),
        "image_size": list(backbone.image_size),
        "crop_to_aspect_ratio": crop_to_aspect_ratio,
        "decode": DECODE_RULE,  # how pixels are decoded (JPEG DCT reduction): a rule change is a new key
        "pooling": pooling,
        "dtype": dtype,
        "compute_dtype": compute_dtype,
        "versions": versions(),
    }


@dataclass(frozen=True)
class Extraction:
    """One extraction, resolved: options, facts, key and where its files go. Plain data, so that worker
    processes and cluster engines receive it as JSON (`to_json`) and rebuild the same thing (`from_json`)."""

    data: ImageFolder
    backbone: Backbone
    cache_dir: Path
    splits: tuple[str, ...]
    pooling: str
    dtype: str
    batch_size: int
    compression: str
    crop_to_aspect_ratio: bool
    content_hash: bool
    precision: str  # resolved: "mixed" or "float32", so every worker builds the model alike
    facts: dict
    key: str
    # The index of rows this run may copy instead of computing (featpipe.reuse.build_index); None: none.
    # Not part of the key: a reused row is the row the base would compute.
    reuse_index: str | None = None

    @property
    def final_path(self) -> Path:
        label = f"{self.backbone.label}-{self.backbone.image_size[0]}-{self.pooling}"
        return self.cache_dir / cache_file_name(label, self.key)

    @property
    def workdir(self) -> WorkDir:
        return WorkDir(self.final_path)

    def to_json(self) -> dict:
        """What a worker needs to rebuild this extraction (`from_json`): plain JSON, no model."""
        if not self.backbone.recipe:
            raise FeatpipeError("extraction in worker processes needs a backbone made by load_backbone")
        return {
            "data": {"root": str(self.data.root.resolve()), "val_fraction": self.data.val_fraction,
                     "seed": self.data.seed},
            "backbone": self.backbone.recipe, "precision": self.precision,
            "cache_dir": str(self.cache_dir.resolve()), "splits": list(self.splits), "pooling": self.pooling,
            "dtype": self.dtype, "batch_size": self.batch_size, "compression": self.compression,
            "crop_to_aspect_ratio": self.crop_to_aspect_ratio, "content_hash": self.content_hash, "key": self.key,
            "reuse_index": self.reuse_index,
        }

    @classmethod
    def from_json(cls, job: dict) -> "Extraction":
        """Rebuild the extraction `to_json` described, in this process: the dataset listing, the base with its
        model loaded, the key computed again. Refused when the key differs (the dataset or the base changed
        since the extraction was planned): a worker never writes parts of another cache."""
        from featpipe.backbones import load_backbone
        from featpipe.data import load_image_folder

        data = load_image_folder(**job["data"])
        recipe = job["backbone"]
        # A worker is given its precision (resolved by the planner), never guesses it: every worker must build
        # the same model and compute the same key. The scope also lets its one GPU grow memory as needed.
        with runtime.precision_scope(job["precision"]):
            backbone = load_backbone(recipe["spec"], weights=recipe["weights"], image_size=recipe["image_size"],
                                     preprocess=recipe["preprocess"], seed=recipe["seed"])
        extraction = plan_extraction(
            data, backbone, job["cache_dir"], splits=job["splits"], pooling=job["pooling"], dtype=job["dtype"],
            batch_size=job["batch_size"], compression=job["compression"],
            crop_to_aspect_ratio=job["crop_to_aspect_ratio"], content_hash=job["content_hash"],
            precision=job["precision"])
        if extraction.key != job["key"]:
            raise FeatpipeError("the dataset or the base changed since this extraction was planned; run it again")
        return replace(extraction, reuse_index=job.get("reuse_index"))

    def manifest(self, device: str, workers: int, shards: int | None, part_rows: int | None) -> dict:
        split_rows = {s: len(self.data.splits[s]) for s in self.splits}
        with runtime.precision_scope(self.precision):
            shape = self.backbone.feature_model(self.pooling).output_shape[1:]
        row_bytes = int(np.prod(shape)) * np.dtype(self.dtype).itemsize
        return {
            "key": self.key, "splits": split_rows, "dtype": self.dtype, "shards": shards,
            "compression": None if self.compression == "none" else self.compression,
            "part_rows": part_rows or part_rows_for(row_bytes, max(split_rows.values()), shards or workers),
            "attrs": _attributes(self, device),
        }


class InProcessEngine:
    """The engine that runs the parts in this process, on its own device: the default of `extract`.

    Every engine has this interface (featpipe.distribute.LocalEngine: worker processes on this node;
    featpipe.ray_engine.RayEngine: actors on a Ray cluster), and every one of them ends in `run_parts`:
      - ``gpus``: whether the parts run on GPUs (decides precision "auto", see runtime.resolve_precision);
      - ``workers()``: how many run parts at once (sizes the parts of a new extraction);
      - ``describe()``: the device label the cache records;
      - ``run(extraction, parts, progress=, setup_seconds=)``: write those parts' files, return figures.
    """

    @property
    def gpus(self) -> bool:
        return bool(runtime.gpus())

    def workers(self) -> int:
        return 1

    def describe(self) -> str:
        return runtime.device_label()

    def run(self, extraction: Extraction, parts: list[Part], *, progress: bool = True,
            setup_seconds: float = 0.0) -> dict:
        return run_parts(extraction, parts, progress=progress, setup_seconds=setup_seconds)


def plan_extraction(data: ImageFolder, backbone: Backbone, cache_dir: str | os.PathLike = "cache", *,
                    splits: list[str] | None = None, pooling: str = "avg", dtype: str = "float32",
                    batch_size: int = 32, compression: str = "none", crop_to_aspect_ratio: bool = False,
                    content_hash: bool = False, precision: str = "auto", on_gpu: bool | None = None) -> Extraction:
    """Check the options and compute the key: everything but the work itself.

    `precision` (auto, float32, mixed) is the one the base was built under; it is part of the key. `on_gpu`:
    whether the parts will run on GPUs (an engine's `gpus`; None: this process's devices), for "auto".
    """
    splits = _check_options(data, splits, pooling, dtype, batch_size, compression)
    resolved = runtime.resolve_precision(precision, on_gpu)
    facts = extraction_facts(data, backbone, splits, pooling, dtype, crop_to_aspect_ratio, content_hash,
                             runtime.compute_dtype(resolved))
    return Extraction(data, backbone, Path(cache_dir), tuple(splits), pooling, dtype, batch_size, compression,
                      crop_to_aspect_ratio, content_hash, resolved, facts, key_digest(facts))


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
    precision: str = "auto",
    progress: bool = True,
    part_rows: int | None = None,
    engine=None,
    reuse: bool = True,
    reuse_from: list[str | os.PathLike] = (),
) -> ExtractResult:
    """Extract features for `splits` (default: all) unless this exact extraction is cached already.

    `engine` runs the missing parts: this process (the default, InProcessEngine), worker processes of this
    node (featpipe.distribute.LocalEngine) or a Ray cluster (featpipe.ray_engine.RayEngine); build one with
    featpipe.engines.make_engine. Whichever runs them, one cache file is assembled here. `part_rows` overrides
    the part size (rows per part file) of a new extraction. `precision` is the one `backbone` was built under
    (auto: mixed float16 when the engine runs on GPUs). With `reuse` (the default), rows whose images are
    in a cache of `cache_dir` or of `reuse_from` made with the same model side are copied, not computed
    (featpipe.reuse).
    """
    start = time.perf_counter()
    engine = engine or InProcessEngine()
    extraction = plan_extraction(data, backbone, cache_dir, splits=splits, pooling=pooling, dtype=dtype,
                                 batch_size=batch_size, compression=compression,
                                 crop_to_aspect_ratio=crop_to_aspect_ratio, content_hash=content_hash,
                                 precision=precision, on_gpu=engine.gpus)
    final, workdir = extraction.final_path, extraction.workdir
    if final.exists():
        return _result(final, cached=True)
    runtime.check_batch_fits(extraction.backbone.image_size, batch_size)  # before any work: never a hang
    with workdir.lock():
        if final.exists():  # another process finished it while we were starting
            return _result(final, cached=True)
        workdir.open(extraction.manifest(engine.describe(), engine.workers(), None, part_rows))
        plan = workdir.plan()
        todo = workdir.missing(plan, extraction.data)
        left = _left_to_shards(workdir, plan, todo)
        stats = {}
        if todo:
            extraction = _with_reuse(extraction, reuse, reuse_from)
        now = [p for p in todo if p not in left]
        if now:
            stats = engine.run(extraction, now, progress=progress, setup_seconds=time.perf_counter() - start)
        for shard in sorted(set(left.values())):
            log.warning("waiting for shard %d/%d (another process) to finish its parts", *shard)
            workdir.wait_for_shard(shard)
        rest = workdir.missing(list(left), extraction.data)  # what a shard that stopped early did not write
        if rest:
            engine.run(extraction, rest, progress=progress)
        start = time.perf_counter()
        assemble(workdir)
        stats["assemble_seconds"] = time.perf_counter() - start
    return _result(final, cached=False, stats=stats)


def extract_shard(
    data: ImageFolder,
    backbone: Backbone,
    cache_dir: str | os.PathLike = "cache",
    *,
    shard: tuple[int, int],
    splits: list[str] | None = None,
    pooling: str = "avg",
    dtype: str = "float32",
    batch_size: int = 32,
    compression: str = "none",
    crop_to_aspect_ratio: bool = False,
    content_hash: bool = False,
    precision: str = "auto",
    progress: bool = True,
    part_rows: int | None = None,
    reuse: bool = True,
    reuse_from: list[str | os.PathLike] = (),
) -> ShardResult:
    """Extract slice K of N of the parts (by sorted file order) into part files only; `merge` assembles them.

    N processes started in any order — reruns included — write the same parts one process would. The other
    arguments are `extract`'s.
    """
    k, n = shard
    if not (n >= 1 and 0 <= k < n):
        raise ArgumentError(f"{{shard}} must be K/N with 0 <= K < N, got {k}/{n}", "shard")
    start = time.perf_counter()
    engine = InProcessEngine()
    extraction = plan_extraction(data, backbone, cache_dir, splits=splits, pooling=pooling, dtype=dtype,
                                 batch_size=batch_size, compression=compression,
                                 crop_to_aspect_ratio=crop_to_aspect_ratio, content_hash=content_hash,
                                 precision=precision, on_gpu=engine.gpus)
    rows = sum(len(data.splits[s]) for s in extraction.splits)
    if n > rows:
        raise ArgumentError(f"{{shard}} {k}/{n} asks for more shards than the {rows} images to extract: "
                            f"use at most {rows} shards", "shard")
    final, workdir = extraction.final_path, extraction.workdir
    if final.exists():
        return ShardResult(final, extraction.key, shard, 0, 0, [], cached=True)
    runtime.check_batch_fits(extraction.backbone.image_size, batch_size)
    with workdir.lock(shard=shard):
        workdir.open(extraction.manifest(engine.describe(), 1, n, part_rows))
        plan = workdir.plan()
        todo = workdir.missing(shard_parts(plan, k, n), extraction.data)
        if todo:
            run_parts(_with_reuse(extraction, reuse, reuse_from), todo, progress=progress, label=f"shard {k}/{n} ",
                      setup_seconds=time.perf_counter() - start, share=shard_parts(plan, k, n))
        missing = workdir.unwritten(plan)
    return ShardResult(final, extraction.key, shard, len(todo), sum(p.rows for p in todo), missing)


def _left_to_shards(workdir: WorkDir, plan: list[Part], todo: list[Part]) -> dict[Part, tuple[int, int]]:
    """The parts of `todo` that shards running in other processes are extracting, each with its shard K/N:
    a plain extract leaves them to those shards and picks up after them."""
    left, todo = {}, set(todo)
    for k, n in workdir.running_shards():
        if n <= sum(p.rows for p in plan):
            left.update({part: (k, n) for part in shard_parts(plan, k, n) if part in todo})
    if left:
        shards = ", ".join(f"{k}/{n}" for k, n in sorted(set(left.values())))
        log.warning("leaving %d part%s (%d rows) to shard%s %s, running in another process; extracting the rest, "
                    "then waiting for it", len(left), "s" * (len(left) != 1), sum(p.rows for p in left),
                    "s" * (len(set(left.values())) != 1), shards)
    return left


def merge(path: str | os.PathLike) -> ExtractResult:
    """Assemble the parts of an extraction (its cache path or its .partial directory) into its cache file."""
    final = Path(str(path).removesuffix("/").removesuffix(".partial"))
    workdir = WorkDir(final)
    if final.exists():
        return _result(final, cached=True)
    if not workdir.path.is_dir():
        raise FeatpipeError(f"no extraction in progress at {workdir.path}")
    with workdir.lock():
        if final.exists():
            return _result(final, cached=True)
        start = time.perf_counter()
        assemble(workdir)
        return _result(final, cached=False, stats={"assemble_seconds": time.perf_counter() - start})


def missing_parts(path: str | os.PathLike) -> str:
    """What an extraction in progress still lacks and what to run next, in words (for `featpipe cache ls`)."""
    workdir = WorkDir(Path(str(path).removesuffix(".partial")))
    plan = workdir.plan()
    missing = workdir.unwritten(plan)
    if not missing:
        return f"all {len(plan)} parts done; assemble them: featpipe cache merge {workdir.final_path}"
    return f"{describe_missing(missing, workdir.manifest())}; rerun its extract command (or those shards) to resume"


def _with_reuse(extraction: Extraction, reuse: bool, reuse_from) -> Extraction:
    if not reuse:
        return extraction
    index = build_index(extraction.cache_dir, extraction.facts, [Path(p) for p in reuse_from])
    return replace(extraction, reuse_index=None if index is None else str(index.resolve()))  # for any cwd


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


def forward_of(extraction: Extraction) -> "Prepared":
    """The compiled forward call of the extraction's feature model: what maps image batches to features. Made
    when first needed (a run whose images are all known copies their rows without building the model), and
    then in the background (`Prepared.prepare`), so that building and tracing the base overlaps the input
    pipeline's start instead of following it."""
    def build():
        with runtime.precision_scope(extraction.precision):
            forward = inference_forward(extraction.backbone.feature_model(extraction.pooling))
            # Trace and optimise the graph now, on one blank image, not on the first batch of real ones.
            forward(tf.zeros([1, *extraction.backbone.image_size, 3]))
        return forward

    return Prepared(build)


def run_parts(extraction: Extraction, parts: list[Part], *, progress: bool = True, threads: int | None = None,
              label: str = "", setup_seconds: float = 0.0, forward=None, reuse: Reuse | None = None,
              share: list[Part] | None = None) -> dict:
    """Extract `parts` in this process: tf.data reads and decodes, the compiled model maps, a background
    thread writes each part as soon as its rows have gone by. Returns the writer's figures.

    `setup_seconds` (what the caller spent getting here: listing, fingerprinting, loading) is counted in the
    first part's seconds, so that the cache's recorded cost is the whole wall time. A worker that runs part
    after part passes its `forward` (forward_of) to build and trace it only once, and its `reuse`
    (featpipe.reuse.Reuse of the extraction's index) to load the index once. On an interrupt, the parts
    already finished are still written before the exception goes on.

    `share`: the parts this command was given, of which `parts` are those not done before it began (default:
    every part of the splits), so that progress says "resuming" only for work an earlier run did.
    """
    start = time.perf_counter()
    forward = forward or forward_of(extraction)
    own_reuse = reuse is None
    reuse = Reuse(extraction.reuse_index) if own_reuse else reuse
    writer = PartWriter(extraction.workdir.path, extraction.key)
    setup = setup_seconds + time.perf_counter() - start
    try:
        _run_stream(extraction, forward, reuse, writer, parts, progress, threads, label, setup, share)
    finally:
        writer.close()
        if own_reuse:
            reuse.close()
    return {"write_seconds": writer.write_seconds, "write_wait_seconds": writer.wait_seconds}


class Prepared:
    """A call whose function `make()` makes once: `prepare()` starts making it in a background thread (at once,
    and at most once); the first call waits for it, and raises what making it raised."""

    def __init__(self, make):
        self._make = make
        self._lock = threading.Lock()
        self._future: Future | None = None

    def prepare(self) -> None:
        with self._lock:
            if self._future is None:
                self._future = Future()
                threading.Thread(target=self._run, name="featpipe-prepare", daemon=True).start()

    def _run(self) -> None:
        try:
            self._future.set_result(self._make())
        except BaseException as e:  # noqa: BLE001  handed to the caller, which raises it
            self._future.set_exception(e)

    def ready(self) -> bool:
        """Whether the function is made (or failed to be): a call would not wait."""
        return self._future is not None and self._future.done()

    def __call__(self, *args):
        self.prepare()
        return self._future.result()(*args)


def _run_stream(extraction: Extraction, forward, reuse: Reuse, writer: PartWriter, parts: list[Part],
                progress: bool, threads: int | None, label: str, setup_seconds: float,
                share: list[Part] | None) -> None:
    """Every split's parts through one input pipeline and one compiled forward: no pipeline is set up, drained
    and warmed again at each split, and a batch may hold the end of one split and the start of the next. Each
    run of a split's consecutive parts is a segment of the stream, with its own part buffer (and progress line);
    a batch that straddles two segments is divided between their buffers."""
    segments, files, offsets = [], [], []
    for split, split_parts in groupby(parts, key=lambda p: p.split):
        split_parts = list(split_parts)
        offsets.append(len(files))
        files += extraction.data.files(split)
        n = sum(p.rows for p in share if p.split == split) if share is not None else len(extraction.data.splits[split])
        segments.append((split, split_parts, n))
    buffers = [_PartBuffer(extraction, split, split_parts, writer, reuse, final=i == len(segments) - 1)
               for i, (split, split_parts, _) in enumerate(segments)]
    rows = np.concatenate([np.arange(p.start, p.stop) + offset
                           for offset, (_, split_parts, _) in zip(offsets, segments) for p in split_parts])
    bounds = np.array(offsets[1:], np.int64)  # global row -> segment: np.searchsorted(bounds, row, "right")

    def compute(segment, local_rows):  # (features, rows) of these rows of a segment through the base
        for feats, found in _forward_rows(extraction, forward, files, local_rows + offsets[segment], threads):
            yield feats, found - offsets[segment]

    def sieve(row, digest):
        segment = int(np.searchsorted(bounds, row, "right"))
        known = buffers[segment].sieve(row - offsets[segment], digest)
        if not known:
            # An image to compute: the base is built while the pipeline starts. Started from a reading thread, the
            # build runs at the pipeline's lower priority (featpipe.low_priority), beside nothing but decoding.
            forward.prepare()
        return known

    if reuse.empty:  # every image goes through the base: build it while the pipeline is set up
        forward.prepare()
    current = -1
    clock = time.perf_counter() - setup_seconds  # each part's seconds run from the previous hand-over

    def advance(to):  # segments up to `to` begin; those before it are complete
        nonlocal current, clock
        while current < to:
            if current >= 0:
                clock = buffers[current].close()
            current += 1
            split, split_parts, n = segments[current]
            todo = sum(p.rows for p in split_parts)
            title = f"{label}{split}" + (f" (resuming: {n - todo} of {n} images already done)" if todo < n else "")
            buffers[current].begin(clock, Progress(todo, title) if progress else None,
                                   lambda local_rows, i=current: compute(i, local_rows))

    advance(0)
    for feats, batch_rows in _forward_rows(extraction, forward, files, rows, threads, sieve=sieve):
        first = current
        cuts = np.searchsorted(batch_rows, bounds[first:], "left")  # where later segments begin in the batch
        for segment, piece in enumerate(np.split(np.arange(len(batch_rows)), cuts), start=first):
            if len(piece):
                advance(segment)
                buffers[segment].add(feats[piece], batch_rows[piece] - offsets[segment])
    advance(len(segments) - 1)
    buffers[current].close()
    writer.drain()


def _forward_rows(extraction: Extraction, forward, files: list[str], rows: np.ndarray, threads: int | None,
                  sieve=None):
    """(features, rows) batches of the base over `rows` of `files`, minus unusable files and those `sieve` takes;
    the features as the base gives them (the part buffer casts them to the storage dtype).

    The next batches are decoded while the base runs. On a GPU, tf.data sizes that buffer. On a CPU the decoder and
    the base share the cores: one batch is decoded ahead, by threads running below the base's priority
    (featpipe.low_priority), so that decoding fills the moments the base leaves idle instead of slowing it."""
    on_cpu = not runtime.gpus()
    dataset = image_batches(files, extraction.backbone.image_size, extraction.batch_size, rows=rows,
                            crop_to_aspect_ratio=extraction.crop_to_aspect_ratio, sieve=sieve, threads=threads)
    batches = iterate_below(dataset) if on_cpu else iter(dataset)
    early = deque()
    if on_cpu:  # while the base is still being built and traced (on one core), decode a few batches on the rest
        room = EARLY_BYTES // runtime.batch_bytes(extraction.backbone.image_size, extraction.batch_size)  # 0: none
        while len(early) < room and not forward.ready():
            batch = next(batches, None)
            if batch is None:
                break
            early.append(batch)
    for images, batch_rows in chain(early, batches):
        yield forward(images).numpy(), batch_rows.numpy()


def image_batches(files: list[str], image_size: tuple[int, int], batch_size: int, *, rows: np.ndarray | None = None,
                  crop_to_aspect_ratio: bool = False, sieve=None, threads: int | None = None) -> tf.data.Dataset:
    """(images, rows) batches of `rows` of `files` as an extraction feeds them to its base: read, checked and
    decoded by featpipe.pipeline.indexed_images. On a GPU, tf.data sizes the buffers. On a CPU, one decoder per
    core (`threads`, if given: several workers on one machine divide its cores) and one batch ahead."""
    on_cpu = not runtime.gpus()
    cores = threads or available_cores()
    dataset = indexed_images(files, image_size, crop_to_aspect_ratio, rows, sieve=sieve,
                             parallel=cores if on_cpu else None)
    dataset = dataset.batch(batch_size).prefetch(1) if on_cpu else batched(dataset, batch_size)
    options = tf.data.Options()
    if threads:  # several workers on one machine divide its cores instead of each taking them all
        options.threading.private_threadpool_size = threads
    if on_cpu:  # no buffers sized by tf.data's autotuner: the one batch ahead is all the cores have room for
        options.autotune.enabled = False
        options.experimental_optimization.inject_prefetch = False
    return dataset.with_options(options)


class _PartBuffer:
    """Collects (features, row) batches and hands each part to the writer as soon as its rows have gone by.

    Rows arrive in order, minus the unreadable ones and the known ones, so a part is complete once a row at or
    past its last row has been seen (or the stream has left its segment). `sieve` sees every usable row's digest first
    (in the reader's thread, ahead of the stream) and takes the rows `reuse` knows: their features are copied
    from their source cache when the part is flushed (rows whose source fails are computed then, by
    `compute`). The rows a part lacks are the skipped ones.

    Features are cast to the storage dtype here, and a part with a NaN or an infinity is never handed over:
    the extraction stops with one line (which split, how many images, what to do), the parts before it kept.
    """

    def __init__(self, extraction: Extraction, split: str, parts: list[Part], writer: PartWriter, reuse: Reuse,
                 final: bool):
        data = extraction.data
        self.extraction, self.split = extraction, split
        self.root, self.writer = data.root, writer
        self.paths, self.labels = data.splits[split].paths, np.asarray(data.splits[split].labels)
        self.reuse = reuse
        self.final = final  # the run's last segment: its last part counts the wait for its write
        self.overflowed = False  # the base's features were finite, the storage dtype could not hold them
        self.todo = deque(parts)
        self.feats: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.digests: dict[int, bytes] = {}  # row -> content digest, until its part is written
        self.known: dict[int, int] = {}  # row -> reuse entry
        self.computed = self.reused = 0

    def begin(self, clock: float, meter, compute) -> None:
        """The stream reached this segment: `clock` is the previous hand-over (each part's seconds run from
        it); `compute(rows)` gives (features, rows) of rows whose copy failed, through the base."""
        self.clock, self.meter, self.compute = clock, meter, compute

    def sieve(self, row: int, digest: bytes) -> bool:
        self.digests[row] = digest
        entry = self.reuse.find(digest)
        if entry is None:
            return False
        self.known[row] = entry
        return True

    def add(self, feats: np.ndarray, rows: np.ndarray) -> None:
        self.feats.append(self._stored(feats))
        self.rows.append(rows)
        # The last part waits for the stream's end (`close`): its seconds then include the input pipeline's
        # shutdown, which can take seconds on a loaded machine, so the recorded seconds stay the wall time.
        while len(self.todo) > 1 and rows[-1] >= self.todo[0].stop - 1:
            self._flush(self.todo.popleft())

    def _stored(self, feats: np.ndarray) -> np.ndarray:
        """`feats` in the storage dtype, noting an overflow (finite features the dtype turns into inf)."""
        with np.errstate(over="ignore"):  # an overflow is reported as such when its part is flushed
            stored = feats.astype(self.extraction.dtype, copy=False)
        if stored is not feats and non_finite_rows(stored) > non_finite_rows(feats):
            self.overflowed = True
        return stored

    def close(self) -> float:
        """Hand over the parts left (the last one, and trailing parts whose last images were all unreadable or
        known); returns the time of the last hand-over."""
        while self.todo:
            self._flush(self.todo.popleft())
        if self.meter:
            self.meter.close(f"{self.computed} computed, {self.reused} reused")
        return self.clock

    def _flush(self, part: Part) -> None:
        feats = np.concatenate(self.feats) if self.feats else np.zeros((0,), np.float32)
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0,), np.int64)
        take = int(np.searchsorted(rows, part.stop))
        pieces = [(feats[:take], rows[:take])]
        self.feats, self.rows = [feats[take:]], [rows[take:]]
        reused, failed = self._copy(part, pieces)
        if failed:
            pieces += [(self._stored(f), r) for f, r in self.compute(np.asarray(failed, np.int64))]
        pieces = [(f, r) for f, r in pieces if len(r)]
        kept = np.concatenate([r for _, r in pieces]) if pieces else np.zeros((0,), np.int64)
        order = np.argsort(kept, kind="stable")
        kept = kept[order]
        features = np.concatenate([f for f, _ in pieces])[order] if pieces else np.zeros((0,), np.float32)
        bad = non_finite_rows(features)
        if bad:
            raise FeatpipeError(self._non_finite(part, bad))
        digests = np.frombuffer(b"".join(self.digests[r] for r in kept.tolist()), np.uint8).reshape(-1, 32)
        for row in range(part.start, part.stop):
            self.digests.pop(row, None)
        skipped = sorted(set(range(part.start, part.stop)) - set(kept.tolist()))
        self.reused += sum(reused.values())
        self.computed += len(kept) - sum(reused.values())
        now = time.perf_counter()
        self.writer.put(PartData(
            part=part, features=features, labels=self.labels[kept], rows=kept,
            paths=[self.paths[r] for r in kept], skipped_rows=np.asarray(skipped, np.int64),
            skipped_paths=[self.paths[r] for r in skipped],
            skipped_reasons=[unreadable_reason(os.path.join(self.root, self.paths[r])) for r in skipped],
            seconds=now - self.clock, clock_from=now if self.final and not self.todo else None,
            digests=digests, reused=reused,
        ))
        self.clock = now
        if self.meter:
            self.meter.update(part.rows)

    def _copy(self, part: Part, pieces: list) -> tuple[dict[str, int], list[int]]:
        """Copy the part's known rows from their sources into `pieces`: ({source: rows copied}, rows not copied)."""
        known = [(row, self.known.pop(row)) for row in range(part.start, part.stop) if row in self.known]
        if not known:
            return {}, []
        found, names = self.reuse.copy([e for _, e in known], [self.digests[r] for r, _ in known])
        copied = [i for i, f in enumerate(found) if f is not None]
        if copied:
            pieces.append((np.stack([found[i] for i in copied]), np.array([known[i][0] for i in copied], np.int64)))
        reused: dict[str, int] = {}
        for i in copied:
            reused[names[i]] = reused.get(names[i], 0) + 1
        return reused, [known[i][0] for i, f in enumerate(found) if f is None]

    def _non_finite(self, part: Part, bad: int) -> str:
        where = f"split {self.split!r}: {bad} of {part.rows} images ({part})"
        kept = "the parts finished before are kept"
        if self.overflowed:
            return (f"{where} have features beyond {self.extraction.dtype}'s range (they would be stored as inf); "
                    f"extract with --dtype float32 ({kept})")
        hint = " or --precision float32" if self.extraction.precision == "mixed" else ""
        return (f"{where} gave non-finite features (NaN or inf) from the base: check its weights and "
                f"preprocessing{hint} ({kept})")


def _attributes(extraction: Extraction, device: str) -> dict:
    data, backbone, facts = extraction.data, extraction.backbone, extraction.facts
    return {
        "facts": facts,
        "classes": list(data.classes),
        "backbone": backbone.spec,
        "weights": backbone.weights,
        "pretrained": backbone.pretrained,
        "image_size": list(backbone.image_size),
        "pooling": facts["pooling"],
        "dataset": {"root": str(data.root.resolve()), "val_fraction": data.val_fraction, "seed": data.seed,
                    "content_hash": extraction.content_hash, "fingerprint": facts["dataset"]["fingerprint"]},
        "versions": facts["versions"],
        "device": device,
        "created": timestamp(),
    }


def _result(path: Path, cached: bool, stats: dict | None = None) -> ExtractResult:
    with FeatureCache(path) as cache:
        timing = cache.total_timing()
        return ExtractResult(
            path=path, key=cache.key, cached=cached,
            rows={s: cache.n_rows(s) for s in cache.splits},
            skipped={s: cache.skipped(s) for s in cache.splits},
            seconds=timing["seconds"], images_per_second=timing["images_per_second"],
            stats=stats or {}, origin={s: cache.origin(s) for s in cache.splits},
        )
