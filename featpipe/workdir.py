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
import shutil
from contextlib import contextmanager
from pathlib import Path

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

        An interrupted run's manifest wins, so its parts line up with the new ones. An unreadable manifest
        or one of another key is replaced (with a warning); parts that do not fit the new layout are redone.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FeatpipeError(f"cannot write to cache directory {self.final_path.parent}: {e.strerror}") from None
        existing = self._read_manifest()
        if existing is not None and existing.get("key") == manifest["key"]:
            return existing
        if existing is not None or self.manifest_path.exists():
            log.warning("discarding the unusable manifest of %s; its parts are checked again", self.path)
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
            raise FeatpipeError(f"{self.path} has no readable manifest.json: run the extract command again")
        return found

    def _read_manifest(self) -> dict | None:
        try:
            data = json.loads(self.manifest_path.read_text())
            plan_parts(data["splits"], int(data["part_rows"]))
            return data if isinstance(data.get("key"), str) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    # --- parts ----------------------------------------------------------------------------------------

    def plan(self) -> list[Part]:
        manifest = self.manifest()
        return plan_parts(manifest["splits"], int(manifest["part_rows"]))

    def part_path(self, part: Part) -> Path:
        return self.path / part.file_name

    def missing(self, parts: list[Part]) -> list[Part]:
        """The parts of `parts` with no sound file yet; unsound files are removed, with a warning."""
        key = self.manifest()["key"]
        todo = []
        for part in parts:
            path = self.part_path(part)
            if not path.exists():
                todo.append(part)
                continue
            problem = check_part(path, part, key)
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

    def lock(self, shard: tuple[int, int] | None = None):
        """Exclusive, non-blocking: the whole key (a full run or a merge), or one shard K/N of it."""
        path = self.lock_path if shard is None else self.path / f"shard-{shard[0]}-of-{shard[1]}.lock"
        what = self.final_path.name if shard is None else f"shard {shard[0]}/{shard[1]} of {self.final_path.name}"
        return exclusive_lock(path, what, f"cache directory {self.final_path.parent}")


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


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
