"""Atomic writes of final artifacts: a reader sees the old file or the complete new one, never a part.

Each write goes to a temporary name in the destination's directory (same file system, so the rename is
atomic), is flushed and fsynced, renamed over the final name, and the directory is fsynced so the rename
itself survives a crash (what git does for its refs and objects). On any failure the temporary file is
removed and the previous file stays as it was; operating-system errors become one-line FeatpipeErrors
("no space left on device writing X").
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from featpipe.errors import FeatpipeError

# Below this many free bytes, a library error while writing (h5py, zip) is taken to be a full disk.
_NEARLY_FULL = 1 << 20

_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EFBIG: "file too large",
}


def write_error(error: OSError, path: str | os.PathLike) -> FeatpipeError:
    """A one-line error for an OSError met while writing `path`."""
    reason = _REASONS.get(error.errno, error.strerror or type(error).__name__)
    return FeatpipeError(f"{reason} writing {path}")


def check_writable(path: str | os.PathLike) -> None:
    """Fail fast, before expensive work, when `path` cannot be written: no such folder, or not writable."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise FeatpipeError(f"no such directory: {parent} (for {path})")
    if Path(path).is_dir():
        raise FeatpipeError(f"is a directory: {path}")
    if not os.access(parent, os.W_OK):
        raise write_error(OSError(errno.EACCES, "Permission denied"), path)
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise write_error(OSError(errno.EROFS, "Read-only file system"), path)


def make_dirs(path: str | os.PathLike) -> Path:
    """mkdir -p with a one-line error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FeatpipeError(f"not a directory: {path}") from None
    except OSError as e:
        raise FeatpipeError(f"{_REASONS.get(e.errno, e.strerror)} creating directory {path}") from None
    return path


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def require_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse, before writing, a file of about `nbytes` that its file system cannot hold: for writers that
    crash the process instead of raising when the disk fills (HDF5 can segfault closing such a file)."""
    path = Path(path)
    try:
        stat = os.statvfs(path.parent)
    except OSError as e:
        raise write_error(e, path) from None
    free = stat.f_bavail * stat.f_frsize
    if free < nbytes + _NEARLY_FULL:
        full = write_error(OSError(errno.ENOSPC, "No space left on device"), path)
        raise FeatpipeError(f"{full} (needs about {(nbytes + _NEARLY_FULL) / 2**20:.1f} MiB, "
                            f"{free / 2**20:.1f} MiB free)")


def _is_disk_full(directory: Path) -> bool:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < _NEARLY_FULL


@contextlib.contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn the errors of writing `path` (a file, or a folder being filled) into one-line FeatpipeErrors."""
    path = Path(path)
    try:
        yield
    except OSError as e:
        raise write_error(e, path) from None
    except FeatpipeError:
        raise
    except Exception:
        # h5py and zipfile turn ENOSPC into their own errors ("Disable slist on flush dest failure").
        if _is_disk_full(path if path.is_dir() else path.parent):
            raise write_error(OSError(errno.ENOSPC, "No space left on device"), path) from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write `path` through, for libraries that write by file name (Keras, joblib,
    matplotlib). It keeps the final suffix (``.keras``, ``.weights.h5``), as Keras requires. When the block
    ends, the file is fsynced and renamed into place; on an error or an interrupt it is removed."""
    path = Path(path)
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    with write_errors(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    tmp = Path(name)
    try:
        with write_errors(path):
            yield tmp
            fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """open() for writing, atomically: ``with atomic_open(p, "w", newline="") as f: ...``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        try:
            with open(tmp, mode, **kwargs) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_error(e, path) from None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def copy_file(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
