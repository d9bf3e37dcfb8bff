"""Build a train/validation/test image-folder layout from a flat folder of labelled file names.

The Kaggle Dogs-vs-Cats format names each file ``<label>.<id>.<ext>`` (``cat.12.jpg``); Deep Learning with
Python takes the first 1,000 of each class for training, the next 500 for validation, the next 1,000 for test.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections import defaultdict
from pathlib import Path

from featpipe.data import is_image_file
from featpipe.errors import FeatpipeError


def _natural_key(name: str) -> list:
    # cat.2.jpg before cat.10.jpg, as the book's range(0, 1000) expects.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def group_by_label(src: Path) -> dict[str, list[str]]:
    """Image file names of a flat folder, grouped by the label before the first dot, naturally sorted."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in os.listdir(src):
        if is_image_file(name) and "." in os.path.splitext(name)[0]:
            groups[name.split(".", 1)[0]].append(name)
    return {label: sorted(names, key=_natural_key) for label, names in sorted(groups.items())}


def make_splits(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    counts: dict[str, int],
    shuffle: bool = False,
    seed: int = 0,
) -> dict[str, dict[str, int]]:
    """Lay out ``dest/<split>/<label>/`` with `counts[split]` images per class; hard links where possible.

    Returns the number of files placed per split and class. Refuses a non-empty destination so that
    no existing data is ever overwritten.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise FeatpipeError(f"source folder not found: {src}")
    if dest.exists() and any(dest.iterdir()):
        raise FeatpipeError(f"destination {dest} is not empty; choose a new folder")
    if any(n < 0 for n in counts.values()):
        raise FeatpipeError("split sizes must not be negative")
    groups = group_by_label(src)
    if len(groups) < 2:
        raise FeatpipeError(f"{src} needs images of at least two labels named like cat.12.jpg, found {list(groups)}")
    needed = sum(counts.values())
    short = {label: len(names) for label, names in groups.items() if len(names) < needed}
    if short:
        raise FeatpipeError(f"not enough images for {needed} per class: {short}")
    placed: dict[str, dict[str, int]] = {split: {} for split in counts}
    for label, names in groups.items():
        if shuffle:
            random.Random(f"{seed}:{label}").shuffle(names)
        start = 0
        for split, n in counts.items():
            target = dest / split / label
            target.mkdir(parents=True, exist_ok=True)
            for name in names[start : start + n]:
                _link_or_copy(src / name, target / name)
            placed[split][label] = n
            start += n
    return placed


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not supported
        shutil.copy2(src, dst)
