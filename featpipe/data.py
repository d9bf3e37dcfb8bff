"""Image-folder datasets: discovery, splits, validation carving and fingerprints.

The layout is the one Keras' `image_dataset_from_directory` uses, one folder per split:
``ROOT/<split>/<class>/<image>`` with splits ``train``, ``validation`` and ``test``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featpipe.choices import SPLITS
from featpipe.errors import FeatpipeError
from featpipe.provenance import sha256_file

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
        split is part of it too, so a different fraction or seed is a different dataset.
        """
        digest = hashlib.sha256()
        digest.update(f"val_fraction={self.val_fraction};seed={self.seed};content={content}\n".encode())
        for rel in sorted(p for split in self.splits.values() for p in split.paths):
            stat = os.stat(os.path.join(self.root, rel))
            digest.update(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
            if content:
                digest.update(sha256_file(os.path.join(self.root, rel)).encode())
        return digest.hexdigest()


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


def _class_names(split_dir: Path) -> list[str]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
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
            for dirpath, _, names in os.walk(class_dir)
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
        raise FeatpipeError(f"--val-fraction must be between 0 and 1, got {fraction}")
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
