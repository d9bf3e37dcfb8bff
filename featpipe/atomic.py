"""Atomic writes of final artifacts: a reader sees the old file or the complete new one, never a part.

Each write goes to a temporary name in the destination's directory (same file system, so the rename is
atomic), is flushed and fsynced, renamed over the final name, and the directory is fsynced so the rename
itself survives a crash (what git does for its refs and objects). On any failure the temporary file is
removed and the previous file stays as it was; operating-system errors become one-line FeatpipeErrors
("no space left on device writing X").

What a user names is what gets written, as a shell's ``>`` would: a symbolic link is followed and its target
replaced (the link stays); a FIFO, a character device or a socket is written through, never replaced by a
file (the content is staged in the temporary folder, then copied in one go, so a reader still never sees a
part). A new file gets the permissions of open() under the user's umask; a replaced file keeps its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

from featpipe.errors import FeatpipeError

# Below this many free bytes, a library error while writing (h5py, zip) is taken to be a full disk.
_NEARLY_FULL = 1 << 20

# How long writing into a FIFO waits for a process to open it for reading.
FIFO_WAIT_SECONDS = 30.0

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
    errno.EPIPE: "the reader closed the pipe",
    errno.ENXIO: "no such device",
}


def write_error(error: OSError, path: str | os.PathLike) -> FeatpipeError:
    """A one-line error for an OSError met while writing `path`."""
    reason = _REASONS.get(error.errno, error.strerror or type(error).__name__)
    return FeatpipeError(f"{reason} writing {path}")


def destination(path: str | os.PathLike) -> Path:
    """What writing `path` writes: a symbolic link's final target (which need not exist yet), else `path`.
    A link to a FIFO or a device (``/dev/stdout``) stays as it is: it is written through, and opening it
    follows it (a ``/proc/self/fd`` pipe has no name to resolve to)."""
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        if _is_special(path, strict=True):
            return path
    except FileNotFoundError:
        pass  # a dangling link: its target is created
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FeatpipeError(f"symbolic link loop: {path}") from None
        raise write_error(e, path) from None
    return Path(os.path.realpath(path))


def _is_special(path: Path, strict: bool = False) -> bool:
    """True for an existing FIFO, device or socket: a file to write into, not to replace. `strict`: raise
    the OSError of a path that cannot be looked at, instead of answering False."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        if strict:
            raise
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _refuse_block_device(path: Path) -> None:
    # A disk or partition: writing a file's bytes over it would destroy a file system, never what was meant.
    if stat.S_ISBLK(os.stat(path).st_mode):
        raise FeatpipeError(f"refusing to write {path}: it is a block device (a disk), not a file")


def check_writable(path: str | os.PathLike) -> None:
    """Fail fast, before expensive work, when `path` cannot be written: no such folder, or not writable."""
    path = destination(path)
    if _is_special(path):
        _refuse_block_device(path)
        if not os.access(path, os.W_OK):
            raise write_error(OSError(errno.EACCES, "Permission denied"), path)
        return
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


def _umask() -> int:
    # Read, not set: os.umask() can only be read by changing it, which races with other threads.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def file_mode(path: str | os.PathLike) -> int:
    """The permissions `path` gets when written: those of the regular file it replaces, else 0666 less the umask."""
    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode):
            return stat.S_IMODE(info.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write `path` through, for libraries that write by file name (Keras, joblib,
    matplotlib). It keeps the final suffix (``.keras``, ``.weights.h5``), as Keras requires. When the block
    ends, the file is fsynced and renamed into place (a symbolic link's target, see `destination`), or copied
    into `path` when it is a FIFO or a device; on an error or an interrupt it is removed."""
    path = destination(path)
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    special = _is_special(path)
    if special:
        _refuse_block_device(path)
    with write_errors(path):
        # mkstemp's file is private (0600) until it is complete; a FIFO or device's stage is the temp folder.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}",
                                    dir=None if special else path.parent)
        os.close(fd)
    tmp = Path(name)
    try:
        with write_errors(path):
            yield tmp
            if special:
                _copy_into(tmp, path)
            else:
                fsync_file(tmp)
                os.chmod(tmp, file_mode(path))
                os.replace(tmp, path)
                fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if special:
        tmp.unlink(missing_ok=True)


def _copy_into(source: Path, target: Path) -> None:
    """Write `source`'s bytes into the FIFO or device `target` (opened without creating or replacing it)."""
    fd = _open_special(target)
    try:
        os.set_blocking(fd, True)
        with open(source, "rb") as f:
            while chunk := f.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _open_special(target: Path) -> int:
    """A write descriptor of `target`; a FIFO is waited on for a reader for up to FIFO_WAIT_SECONDS."""
    deadline = time.monotonic() + FIFO_WAIT_SECONDS
    while True:
        try:  # O_NONBLOCK: opening a FIFO with no reader fails (ENXIO) instead of blocking forever
            return os.open(target, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            fifo = stat.S_ISFIFO(os.stat(target).st_mode)
            if e.errno != errno.ENXIO or not fifo:
                raise
            if time.monotonic() > deadline:
                raise FeatpipeError(f"no process opened the FIFO {target} for reading within "
                                    f"{FIFO_WAIT_SECONDS:.0f} s; nothing was written") from None
            time.sleep(0.05)


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
