"""Run directories: the on-disk format that the cached heads and the end-to-end path share.

A run directory holds::

    run.json       what was run: kind ("head" | "finetune"), head name, backbone spec, weights, image size,
                   pooling, cache path + key, dataset root + fingerprint + class names, params, seed,
                   versions, and "status": "complete" (written last, atomically: a run without it is unfinished)
    metrics.json   {"validation": {...}, "test": {...}} as made by featpipe.metrics.classification_metrics,
                   "selection" (the hyperparameter grid and the validation score of each point), and
                   "timing" (extract_seconds, fit_seconds, predict_seconds, total_seconds, ...)
    history.json   Keras-style per-epoch lists ({"loss": [...], "val_loss": [...], "accuracy": [...], ...})
                   plus "phases": [{"name": ..., "start_epoch": int}, ...]; only for runs with epochs
    model.keras / model.joblib   the fitted model
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from featpipe.errors import FeatpipeError

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically: a reader never sees a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=_jsonable)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FeatpipeError(f"missing file: {path}") from None
    except json.JSONDecodeError as e:
        raise FeatpipeError(f"unreadable JSON in {path}: {e}") from None


def _jsonable(value: Any) -> Any:
    # numpy scalars and arrays, Paths: everything else is a bug worth a TypeError.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def is_complete(run_dir: str | os.PathLike) -> bool:
    """True when the run finished: run.json exists and says so."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return False
    try:
        return read_json(path).get("status") == "complete"
    except FeatpipeError:
        return False


def finish_run(run_dir: str | os.PathLike, info: dict, metrics: dict, history: dict | None = None) -> Path:
    """Write metrics (and history), then run.json last, so completeness is all-or-nothing."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / METRICS_FILE, metrics)
    if history is not None:
        write_json(run_dir / HISTORY_FILE, history)
    write_json(run_dir / RUN_FILE, {**info, "status": "complete"})
    return run_dir


def load_run(run_dir: str | os.PathLike) -> dict:
    """Read a finished run: {"dir", "run", "metrics", "history"}; a clear error if it is unfinished."""
    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise FeatpipeError(f"{run_dir} is not a finished run (no complete {RUN_FILE})")
    history_path = run_dir / HISTORY_FILE
    return {
        "dir": run_dir,
        "run": read_json(run_dir / RUN_FILE),
        "metrics": read_json(run_dir / METRICS_FILE),
        "history": read_json(history_path) if history_path.is_file() else None,
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
        if child.is_dir() and not any(child == m or child in m.parents for m in marked)
    }
    return sorted(marked | bare) or [path]
