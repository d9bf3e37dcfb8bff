"""Image-folder datasets: discovery, splits, validation carving and fingerprints.

The layout is the one Keras' `image_dataset_from_directory` uses, one folder per split:
``ROOT/<split>/<class>/<image>`` with splits ``train``, ``validation`` and ``test``.

Every file with an image name is a row, whatever it turns out to be: a FIFO, a dangling link or a link loop
named ``x.jpg`` is skipped when read (see `read_regular_file`) and recorded with its reason, never opened in
a way that blocks. Links to regular files, inside or outside the tree, are followed. A folder that cannot
be listed is an error: its images would silently be missing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featpipe.choices import SPLITS
from featpipe.errors import ArgumentError, FeatpipeError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif"})


@dataclass(frozen=True)
class Split:
    """One split: image paths relative to the dataset root (POSIX style) and integer labels."""

    name: str
    paths: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class ImageFolder:
    """A discovered dataset: its root, sorted class names and splits."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, Split]
    val_fraction: float | None = None
    seed: int = 0

    def files(self, split: str) -> list[str]:
        """Absolute paths of a split's images, in row order."""
        return [os.path.join(self.root, p) for p in self.splits[split].paths]

    def fingerprint(self, content: bool = False) -> str:
        """A digest of every image's relative path, size and modification time (and bytes if `content`).

        It changes when any image is added, removed, renamed or modified; the carving of a validation
        split is part of it too, so a different fraction or seed is a different dataset. A path that cannot
        be used (a dangling link, a special file) enters as what it is, so it never stops the digest.
        """
        digest = hashlib.sha256()
        digest.update(f"val_fraction={self.val_fraction};seed={self.seed};content={content}\n".encode())
        for rel in sorted(p for split in self.splits.values() for p in split.paths):
            digest.update(_file_facts(str(self.root), rel, content).encode())
        return digest.hexdigest()

    def require_classes(self, split: str = "train") -> None:
        """Training needs two classes or more, each with images in `split`: refuse up front, not after an epoch."""
        if len(self.classes) < 2:
            raise FeatpipeError(f"dataset {self.root} has one class ({', '.join(self.classes)}): a classifier "
                                "needs at least two class folders")
        present = set(self.splits[split].labels)
        empty = [name for i, name in enumerate(self.classes) if i not in present]
        if empty:
            raise FeatpipeError(f"class {', '.join(empty)} has no images in the {split} split of {self.root}")


class UnusableFile(Exception):
    """A dataset path that is not a regular, readable file; `reason` says what it is instead."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _open_reason(path: str, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    if error.errno == errno.ENOENT:
        return "dangling symbolic link" if os.path.islink(path) else "file vanished"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "cannot read: permission denied"
    if error.errno == errno.ENXIO:
        return "not a regular file: a socket"
    return f"cannot open: {error.strerror}"


def open_regular_file(path: str) -> tuple[int, os.stat_result]:
    """(file descriptor, stat) of a regular file; UnusableFile for anything else.

    O_NONBLOCK: opening a FIFO never waits for a writer; the fstat then refuses it. Close the fd when done.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UnusableFile(_open_reason(path, e)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnusableFile(f"not a regular file: {_kind(info.st_mode)}")
    return fd, info


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """The whole content of a regular, readable, non-empty file of at most `max_bytes`, read once;
    UnusableFile otherwise, also when the file changes while being read."""
    fd, info = open_regular_file(path)
    try:
        if info.st_size == 0:
            raise UnusableFile("empty file")
        if info.st_size > max_bytes:
            raise UnusableFile(f"file of {info.st_size} bytes exceeds the {max_bytes}-byte limit")
        # Each read asks for one byte more than is left, which tells a file that grew; once the expected bytes are
        # in, no read for the end of the file follows (a system call per file saved): the fstat after tells a file
        # that changed since.
        chunks, got = [], 0
        while got < info.st_size:
            try:
                chunk = os.read(fd, min(info.st_size + 1 - got, 1 << 24))
            except OSError as e:
                raise UnusableFile(f"read error: {e.strerror}") from None
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if len(data) != info.st_size or (after.st_size, after.st_mtime_ns) != (info.st_size, info.st_mtime_ns):
        raise UnusableFile("file changed while being read")
    return data


def _file_facts(root: str, rel: str, content: bool) -> str:
    """One fingerprint line: size and time of what the path leads to (and its digest), or what it is instead."""
    path = os.path.join(root, rel)
    try:
        fd, info = open_regular_file(path)
    except UnusableFile as e:
        try:
            link = os.lstat(path)
            return f"{rel}\tunusable:{e.reason}\t{link.st_size}\t{link.st_mtime_ns}\n"
        except OSError:
            return f"{rel}\tunusable:{e.reason}\n"
    try:
        line = f"{rel}\t{info.st_size}\t{info.st_mtime_ns}\n"
        if content:
            with os.fdopen(os.dup(fd), "rb") as f:
                line += hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        line += f"unreadable:{e.strerror}"
    finally:
        os.close(fd)
    return line


def is_image_file(name: str) -> bool:
    # Hidden files (".DS_Store", macOS "._x.jpg" forks) are never images.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def load_image_folder(root: str | os.PathLike, val_fraction: float | None = None, seed: int = 0) -> ImageFolder:
    """Discover ``ROOT/<split>/<class>/<image>``; with `val_fraction`, carve a stratified validation split."""
    root = Path(root)
    if not root.is_dir():
        raise FeatpipeError(f"dataset folder not found: {root}")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if "train" not in present:
        raise FeatpipeError(
            f"{root} has no train/ folder: expected ROOT/train/<class>/<image> (and validation/, test/)"
        )
    classes = _class_names(root / "train")
    splits = {}
    for name in present:
        split_classes = _class_names(root / name)
        if split_classes != classes:
            raise FeatpipeError(_mismatch_message(name, split_classes, classes))
        splits[name] = _scan_split(root, name, classes)
    if val_fraction is not None:
        if "validation" in splits:
            raise FeatpipeError(f"{root} already has a validation/ split; drop --val-fraction")
        splits["train"], splits["validation"] = carve_validation(splits["train"], val_fraction, seed)
    return ImageFolder(root, tuple(classes), splits, val_fraction, seed)


def folder_error(error: OSError) -> None:
    """os.walk's onerror: a folder that cannot be listed is a one-line error, not silently empty."""
    reason = "permission denied" if error.errno in (errno.EACCES, errno.EPERM) else error.strerror
    raise FeatpipeError(f"cannot read folder {error.filename}: {reason}")


def _class_names(split_dir: Path) -> list[str]:
    try:
        classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        folder_error(e)
    if not classes:
        raise FeatpipeError(f"{split_dir} has no class folders: expected {split_dir}/<class>/<image>")
    return classes


def _mismatch_message(split: str, found: list[str], expected: list[str]) -> str:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    parts = [f"missing {missing}" if missing else "", f"extra {extra}" if extra else ""]
    return f"classes of {split}/ differ from train/: " + ", ".join(p for p in parts if p)


def _scan_split(root: Path, split: str, classes: list[str]) -> Split:
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = root / split / name
        files = sorted(
            os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
            for dirpath, _, names in os.walk(class_dir, onerror=folder_error)
            for f in names
            if is_image_file(f)
        )
        if not files:
            raise FeatpipeError(f"class folder {class_dir} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        paths += files
        labels += [label] * len(files)
    return Split(split, tuple(paths), tuple(labels))


def carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split `train` into (train, validation), stratified by class and reproducible from `seed`."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise ArgumentError(f"{{val_fraction}} must be between 0 and 1, got {fraction}", "val_fraction")
    labels = np.asarray(train.labels)
    try:
        keep, carve = train_test_split(
            np.arange(len(train)), test_size=fraction, stratify=labels, random_state=seed
        )
    except ValueError as e:
        raise FeatpipeError(f"cannot carve a {fraction:g} validation split from train: {e}") from None

    def subset(name: str, rows: np.ndarray) -> Split:
        rows = np.sort(rows)
        return Split(name, tuple(train.paths[i] for i in rows), tuple(int(labels[i]) for i in rows))

    return subset("train", keep), subset("validation", carve)
