"""The work directory of an extraction in progress: ``<final>.partial/``.

It holds ``manifest.json`` (the key, the part layout, and what the final file's attributes will be) and one
part file per finished part. Everything in it can be re-validated, so any process — a resumed run, a worker of
another node, ``featpipe cache merge`` — can pick up where others stopped. The manifest is created once and
never rewritten, so processes that start together agree on the part layout.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from featpipe.choices import COMPRESSIONS, DTYPES
from featpipe.errors import FeatpipeError
from featpipe.parts import Part, check_part, plan_parts

log = logging.getLogger(__name__)


class WorkDir:
    def __init__(self, final_path: str | os.PathLike):
        self.final_path = Path(final_path)
        self.path = Path(f"{self.final_path}.partial")
        self.manifest_path = self.path / "manifest.json"
        self.lock_path = Path(f"{self.final_path}.lock")

    # --- manifest -------------------------------------------------------------------------------------

    def open(self, manifest: dict) -> dict:
        """Create the work directory with `manifest` unless one for this key exists; returns the one in force.

        An interrupted run's manifest wins, so its parts line up with the new ones — when it agrees with
        `manifest` (the plan made from the dataset now) on every field but the part size and the shard count.
        An unreadable manifest, or one that disagrees, is replaced (with a warning); parts that do not fit the
        new layout are redone.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FeatpipeError(f"cannot write to cache directory {self.final_path.parent}: {e.strerror}") from None
        existing = self._read_manifest()
        problem = "it cannot be read" if existing is None else disagreement(existing, manifest)
        if problem is None:
            return existing
        if existing is not None or self.manifest_path.exists():
            log.warning("discarding the manifest of %s (%s); its parts are checked again", self.path, problem)
            self.manifest_path.unlink(missing_ok=True)
        tmp = self.path / f"manifest.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(manifest, default=str))  # split order is the plan order
        try:
            os.link(tmp, self.manifest_path)  # create-if-absent: a process that starts at once keeps its own
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return self.manifest()

    def manifest(self) -> dict:
        found = self._read_manifest()
        if found is None:
            raise FeatpipeError(f"{self.path} has no usable manifest.json: run the extract command again")
        return found

    def _read_manifest(self) -> dict | None:
        """The manifest when every field has the type and range a plan can have (else None: never trusted)."""
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and malformed(data) is None else None

    # --- parts ----------------------------------------------------------------------------------------

    def plan(self) -> list[Part]:
        manifest = self.manifest()
        return plan_parts(manifest["splits"], int(manifest["part_rows"]))

    def part_path(self, part: Part) -> Path:
        return self.path / part.file_name

    def missing(self, parts: list[Part], data=None) -> list[Part]:
        """The parts of `parts` with no sound file yet; unsound files are removed, with a warning.

        Given the dataset (`data`, an ImageFolder), each part's paths and labels are checked against it too.
        """
        manifest = self.manifest()
        key, classes = manifest["key"], len(manifest["attrs"]["classes"])
        todo = []
        for part in parts:
            path = self.part_path(part)
            if not path.exists():
                todo.append(part)
                continue
            problem = check_part(path, part, key, classes, data.splits[part.split] if data is not None else None)
            if problem:
                log.warning("redoing %s: its part file %s is unusable (%s)", part, path.name, problem)
                path.unlink(missing_ok=True)
                todo.append(part)
        return todo

    def unwritten(self, parts: list[Part]) -> list[Part]:
        """The parts of `parts` with no file yet (not validated: for progress and reports; `missing` validates)."""
        return [p for p in parts if not self.part_path(p).exists()]

    def finished_rows(self, parts: list[Part]) -> int:
        """Rows of `parts` whose files exist (for progress lines)."""
        return sum(p.rows for p in parts) - sum(p.rows for p in self.unwritten(parts))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)

    # --- locks ----------------------------------------------------------------------------------------

    def running_shards(self) -> list[tuple[int, int]]:
        """The shards K/N whose lock a live process holds now (job array tasks running beside this process)."""
        held = []
        for path in self.path.glob("shard-*-of-*.lock"):
            match = re.fullmatch(r"shard-(\d+)-of-(\d+)\.lock", path.name)
            if match and _held(path, block=False):
                held.append((int(match.group(1)), int(match.group(2))))
        return sorted(held)

    def wait_for_shard(self, shard: tuple[int, int]) -> None:
        """Block until no process holds shard K/N's lock (Ctrl-C and SIGTERM still interrupt the wait)."""
        _held(self.path / f"shard-{shard[0]}-of-{shard[1]}.lock", block=True)

    def lock(self, shard: tuple[int, int] | None = None):
        """Exclusive, non-blocking: the whole key (a full run or a merge), or one shard K/N of it."""
        path = self.lock_path if shard is None else self.path / f"shard-{shard[0]}-of-{shard[1]}.lock"
        what = self.final_path.name if shard is None else f"shard {shard[0]}/{shard[1]} of {self.final_path.name}"
        return exclusive_lock(path, what, f"cache directory {self.final_path.parent}")


# A plan bigger than this is a damaged manifest, not a dataset (a billion images at 4096 rows a part is 250k parts):
# `cache ls` and the assembly enumerate the plan, so it must stay small.
MAX_PARTS = 1_000_000


def malformed(manifest: dict) -> str | None:
    """What makes `manifest` unusable as a plan (a wrong type or an impossible value), or None."""
    def count(value, low=0):
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    splits, part_rows, shards = manifest.get("splits"), manifest.get("part_rows"), manifest.get("shards")
    attrs = manifest.get("attrs")
    if not isinstance(manifest.get("key"), str):
        return "no key"
    if not isinstance(splits, dict) or not splits or not all(
            isinstance(s, str) and count(n) for s, n in splits.items()):
        return "its split sizes are not counts"
    if not count(part_rows, 1) or sum(-(-n // part_rows) for n in splits.values()) > MAX_PARTS:
        return "its part size is not a positive count, or makes too many parts"
    if shards is not None and not (count(shards, 1) and shards <= max(1, sum(splits.values()))):
        return "its shard count is not between 1 and the number of rows"
    if manifest.get("dtype") not in DTYPES or manifest.get("compression") not in (None, *COMPRESSIONS):
        return "its dtype or compression is unknown"
    if not isinstance(attrs, dict) or not isinstance(attrs.get("classes"), list) or not attrs["classes"]:
        return "its attributes name no classes"
    return None


def disagreement(existing: dict, planned: dict) -> str | None:
    """Where a work directory's manifest disagrees with the plan made now, or None. The part size and the shard
    count may differ (the first run's stay in force, so every process keeps the same part layout)."""
    for field in ("key", "splits", "dtype", "compression"):
        if existing.get(field) != planned[field]:
            return f"its {field} is not this extraction's"
    if existing["attrs"].get("classes") != planned["attrs"]["classes"]:
        return "its classes are not this extraction's"
    if list(existing["splits"]) != list(planned["splits"]):
        return "its split order is not this extraction's"
    return None


@contextmanager
def exclusive_lock(path: Path, what: str, place: str | None = None, remove: bool = False):
    """Hold an exclusive, non-blocking lock on the file `path` while the block runs: a second process that
    wants it gets a one-line FeatpipeError naming `what` at once. flock locks die with their process, so a
    killed run never leaves a stale lock. `place` names the folder in the error when `path` cannot be made.

    With `remove` the lock file is deleted when the block ends (while still held); a process that opened it
    just before finds, once locked, that the path no longer names its file, and locks the new one instead.
    """
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            raise FeatpipeError(f"cannot write to {place or path.parent}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FeatpipeError(
                f"another featpipe process is writing {what} (lock held on {path}); "
                "wait for it to finish, then run again to reuse its result"
            ) from None
        if not remove or _same_file(fd, path):
            break
        os.close(fd)  # locked a file its holder had already removed: lock the current one
    try:
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)
        os.close(fd)


def _held(path: Path, block: bool) -> bool:
    """Whether another process holds the lock file `path` (taken and let go at once); with `block`, wait for it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | (0 if block else fcntl.LOCK_NB))
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
