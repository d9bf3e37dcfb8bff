"""Run directories: the on-disk format that the cached heads and the end-to-end path share.

A run directory holds::

    run.json       what was run (a `RunRecord`): kind ("head" | "finetune"), head name, backbone spec, weights,
                   image size, pooling, cache path + key, dataset root + fingerprint + class names, params, seed,
                   versions, and "status": "complete" (written last, atomically: a run without it is unfinished)
    metrics.json   {"validation": {...}, "test": {...}} as made by featpipe.metrics.classification_metrics,
                   "selection" (the hyperparameter grid and the validation score of each point), and
                   "timing" (`timing`: extract_seconds, fit_seconds, predict_seconds, total_seconds, ...)
    history.json   Keras-style per-epoch lists ({"loss": [...], "val_loss": [...], "accuracy": [...], ...})
                   plus "phases": [{"name": ..., "start_epoch": int}, ...]; only for runs with epochs
    model.keras / model.joblib   the fitted model (head.json beside it for cached heads)

run.json records the SHA-256 of every model file featpipe wrote ("model_sha256": {file name: digest}); a
model is loaded only after its file matches (`verified_model_file`), so a run directory from elsewhere
whose pickle was swapped is refused before anything in it is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

from featpipe import atomic, runtime
from featpipe.errors import FeatpipeError
from featpipe.provenance import sha256_file, timestamp

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
DIGESTS = "model_sha256"
# The folder under a runs root where label-efficiency curves go (featpipe.curve): not a run.
CURVES_DIR = "curves"


@dataclass(frozen=True)
class RunRecord:
    """What run.json says about a run, for both paths: the one place its fields are named.

    `details` holds what only one path records (a cached head's weights_id, streamed and fit; an end-to-end
    run's device, precision, trainable params, ...); its keys sit beside the named fields in run.json.
    finish_run adds the model digests and "status".
    """

    name: str
    kind: str  # "head" | "finetune"
    path: str  # "cached" | "end-to-end"
    head: str
    backbone: str
    weights: str
    pretrained: bool
    image_size: list[int]
    pooling: str
    crop_to_aspect_ratio: bool
    preprocessing: dict
    cache: dict | None  # {"path", "key"} of the feature cache; None for end-to-end runs
    dataset: dict  # root, fingerprint, classes (+ val_fraction)
    params: dict
    seed: int | None
    versions: dict
    model_file: str
    created: str = field(default_factory=timestamp)
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        clash = sorted(set(self.details) & ({f.name for f in fields(self)} | {DIGESTS, "status"}))
        if clash:
            raise ValueError(f"run record details repeat fields it owns: {', '.join(clash)}")

    def to_json(self) -> dict:
        """run.json's fields (before finish_run adds the digests and status); the caller's values are copied."""
        record = asdict(self)
        details = record.pop("details")
        return {**record, **details}

    @classmethod
    def from_json(cls, data: Any, where: str | os.PathLike = RUN_FILE) -> "RunRecord":
        """The record in run.json's `data` (what `to_json` wrote, with or without finish_run's digests and
        status), checked field by field: one line naming every missing or ill-typed field of `where`. A new
        field is one line here (its check) and one in the class."""
        if not isinstance(data, dict):
            raise FeatpipeError(f"{where} is damaged: expected a JSON object, got {type(data).__name__}")
        bad = [name for name, check in _CHECKS.items() if name not in data or not check(data[name])]
        if bad:
            raise FeatpipeError(f"{where} is damaged: missing or bad {', '.join(bad)}")
        owned = {f.name for f in fields(cls)} - {"details"}
        details = {k: v for k, v in data.items() if k not in owned and k not in (DIGESTS, "status")}
        return cls(**{name: data[name] for name in owned if name in data}, details=details)


def _is(*kinds) -> Callable[[Any], bool]:
    # bool is an int to isinstance, but never a valid count, seed or size here
    return lambda value: isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _image_size(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is(int)(v) and v > 0 for v in value)


def _dataset(value) -> bool:
    classes = value.get("classes") if isinstance(value, dict) else None
    return isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)


# What every run.json holds, by RunRecord field (created: a default for records built in this process).
_CHECKS: dict[str, Callable[[Any], bool]] = {
    "name": _is(str), "kind": lambda v: v in ("head", "finetune"), "path": _is(str), "head": _is(str),
    "backbone": _is(str), "weights": _is(str), "pretrained": _is(bool), "image_size": _image_size,
    "pooling": _is(str), "crop_to_aspect_ratio": _is(bool), "preprocessing": _is(dict),
    "cache": lambda v: v is None or isinstance(v, dict), "dataset": _dataset, "params": _is(dict),
    "seed": lambda v: v is None or _is(int)(v), "versions": _is(dict), "model_file": _is(str),
    "created": _is(str),
}


def timing(*, fit_seconds: float, predict_seconds: float, extract_seconds: float = 0.0,
           extract_images_per_second: float | None = None, setup_seconds: float = 0.0, **extra) -> dict:
    """metrics.json's "timing", the same fields for both paths: total = extract + fit + predict + setup.

    A cached head's extract is its cache's (all splits); an end-to-end run extracts nothing and counts the
    building of its model and data as setup. `extra` adds a path's own figures (phase_seconds, ...).
    """
    return {
        "extract_seconds": extract_seconds, "extract_images_per_second": extract_images_per_second,
        "fit_seconds": fit_seconds, "predict_seconds": predict_seconds,
        "total_seconds": extract_seconds + fit_seconds + predict_seconds + setup_seconds, **extra,
    }


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically: a reader never sees a half-written file, a full disk leaves the old one."""
    text = json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n"  # TypeError before any write
    atomic.write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise FeatpipeError(f"missing file: {path}") from None
    except UnicodeDecodeError:
        raise FeatpipeError(f"unreadable JSON in {path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise FeatpipeError(f"unreadable JSON in {path}: {e}") from None
    except OSError as e:
        raise FeatpipeError(f"cannot read {path}: {e.strerror}") from None


def read_json_object(path: str | os.PathLike) -> dict:
    """read_json for files that must hold one JSON object (run.json, metrics.json, ...)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FeatpipeError(f"unreadable {Path(path).name} in {Path(path).parent}: expected a JSON object, "
                            f"got {type(data).__name__}")
    return data


def _jsonable(value: Any) -> Any:
    # numpy scalars and arrays, Paths: everything else is a bug worth a TypeError.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def is_complete(run_dir: str | os.PathLike) -> bool:
    """True when the run finished: run.json exists and says so."""
    if not (Path(run_dir) / RUN_FILE).is_file():
        return False
    try:
        return read_run_file(run_dir).get("status") == "complete"
    except FeatpipeError:
        return False


def finish_run(run_dir: str | os.PathLike, record: RunRecord, metrics: dict, history: dict | None = None,
               model_digests: dict[str, str] | None = None) -> Path:
    """Write metrics (and history), then run.json (the record, digests, status) last, so completeness is
    all-or-nothing.

    `model_digests` ({file name: SHA-256}, from `save_model_files`) go into run.json; without them the
    run's model can never be loaded.
    """
    run_dir = atomic.make_dirs(run_dir)
    write_json(run_dir / METRICS_FILE, metrics)
    if history is not None:
        write_json(run_dir / HISTORY_FILE, history)
    extra = {DIGESTS: dict(model_digests)} if model_digests is not None else {}
    write_json(run_dir / RUN_FILE, {**record.to_json(), **extra, "status": "complete"})
    return run_dir


def save_model_files(run_dir: str | os.PathLike, write: Callable[[Path], object]) -> dict[str, str]:
    """`write(folder)` writes a run's model files into a staging folder inside run_dir; each file is then
    fsynced, digested and renamed into run_dir. Returns {file name: SHA-256} for finish_run.

    A failure (a full disk, a library error) leaves the run directory's previous files as they were.
    """
    run_dir = atomic.make_dirs(run_dir)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=run_dir))
    except OSError as e:
        raise atomic.write_error(e, run_dir) from None
    try:
        with atomic.write_errors(run_dir):
            write(staging)
            digests = {}
            for file in sorted(staging.iterdir()):
                if not file.is_file():
                    raise FeatpipeError(f"internal: a model writer left a non-file {file.name} in {run_dir}")
                atomic.fsync_file(file)
                digests[file.name] = sha256_file(file)
            for name in digests:
                os.replace(staging / name, run_dir / name)
            atomic.fsync_dir(run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return digests


def save_weights(model, path: str | os.PathLike) -> None:
    """A Keras model's weights (and its optimizer's state) to `path` through a temporary file, refused up
    front when the disk cannot hold them: HDF5 segfaults the process when the disk fills mid-write."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.weights, *(optimizer.variables if optimizer is not None and optimizer.built else [])]
    atomic.require_space(path, 2 * runtime.variable_bytes(variables))  # HDF5 metadata and chunk slack
    with atomic.atomic_path(path) as tmp:
        model.save_weights(tmp)


def verified_model_file(run_dir: str | os.PathLike, info: dict) -> Path:
    """The path of the run's model file, once every model file matches the SHA-256 recorded in run.json.

    Refused (nothing is read but the bytes hashed) when a digest is missing -- featpipe cannot show it wrote
    the file -- or differs: a file modified, truncated or swapped since it was written.
    """
    run_dir = Path(run_dir)
    name = info.get("model_file")
    digests = info.get(DIGESTS)
    if not isinstance(name, str) or not isinstance(digests, dict) or name not in digests:
        raise FeatpipeError(
            f"{run_dir}/{RUN_FILE} records no SHA-256 of its model file, so featpipe cannot show it wrote it and "
            "will not load it; retrain the run with this version of featpipe"
        )
    for file, digest in digests.items():
        path = run_dir / str(file)
        if Path(str(file)).name != file or file in ("", ".", ".."):
            raise FeatpipeError(f"{run_dir}/{RUN_FILE} names a model file outside the run directory: {file!r}")
        if not path.is_file():
            raise FeatpipeError(f"model file missing from run {run_dir}: {file}")
        if sha256_file(path) != digest:
            raise FeatpipeError(
                f"model file {path} does not match the SHA-256 featpipe recorded when it wrote it (modified, "
                "truncated or replaced since); refusing to load it -- retrain the run"
            )
    return run_dir / name


def read_run_file(run_dir: str | os.PathLike) -> dict:
    """run.json of `run_dir` as it is on disk (finished or not), for status and names; `load_run` validates."""
    return read_json_object(Path(run_dir) / RUN_FILE)


def load_run(run_dir: str | os.PathLike) -> dict:
    """Read a finished run: {"dir", "record" (its RunRecord, validated), "run" (run.json's object, with the
    model digests and status), "metrics", "history"}; a clear one-line error if it is unfinished or damaged."""
    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise FeatpipeError(f"{run_dir} is not a finished run (no complete {RUN_FILE})")
    info = read_run_file(run_dir)
    history_path = run_dir / HISTORY_FILE
    return {
        "dir": run_dir,
        "record": RunRecord.from_json(info, run_dir / RUN_FILE),
        "run": info,
        "metrics": read_json_object(run_dir / METRICS_FILE),
        "history": read_json_object(history_path) if history_path.is_file() else None,
    }


def find_runs(paths: list[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Expand run directories and roots of run directories into (finished, unfinished) run dirs."""
    finished, unfinished = [], []
    for path in map(Path, paths):
        if not path.is_dir():
            raise FeatpipeError(f"no such run directory: {path}")
        for run_dir in _run_dirs(path):
            (finished if is_complete(run_dir) else unfinished).append(run_dir)
    return finished, unfinished


def _run_dirs(path: Path) -> list[Path]:
    """A run directory itself, or every run below a root: folders holding a run or metrics file, plus the
    root's sub-folders that hold neither anywhere (runs that died before writing one)."""
    if (path / RUN_FILE).exists():
        return [path]
    marked = {p.parent for name in (RUN_FILE, METRICS_FILE) for p in path.rglob(name)}
    bare = {
        child for child in path.iterdir()
        if child.is_dir() and child.name != CURVES_DIR and not any(child == m or child in m.parents for m in marked)
    }
    return sorted(marked | bare) or [path]


def run_lock(run_dir: str | os.PathLike):
    """A context manager held while a run directory is written: a second process training the same run gets a
    one-line error at once instead of both reporting success and the last writer silently winning. The lock
    file sits beside the run directory (``.<run dir name>.lock``, so replacing the directory never drops it)
    and goes when the run is written."""
    from featpipe.workdir import exclusive_lock  # the extraction's lock, one implementation

    run_dir = Path(run_dir)
    lock = run_dir.parent / f".{run_dir.name}.lock"
    atomic.make_dirs(run_dir.parent)
    atomic.check_writable(lock)
    return exclusive_lock(lock, f"run directory {run_dir}", remove=True)
