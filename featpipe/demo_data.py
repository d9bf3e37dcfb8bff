"""The demo's target task as an image folder: classes the demo's base never saw, few labelled images each.

The classes are `featpipe.shapes.TARGET_CLASSES` (textured shapes the source task never draws), so the
split sizes are the book's small-data setting: a few dozen labelled training images per class, and a test
split large enough that accuracies differ by more than their noise.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from featpipe import shapes
from featpipe.data import SPLITS

DEMO_CLASSES = shapes.TARGET_CLASSES
DEMO_SPLIT_SIZES = {"train": 20, "validation": 20, "test": 60}
DEMO_IMAGE_SIZE = 32


def make_demo_dataset(
    root: str | os.PathLike,
    classes: tuple[tuple[str, str], ...] = DEMO_CLASSES,
    split_sizes: dict[str, int] | None = None,
    size: int = DEMO_IMAGE_SIZE,
    seed: int = 0,
) -> Path:
    """Write ``root/<split>/<shape>-<texture>/<i>.png``; returns root. Same seed, same images.

    PNG, not JPEG: the base was pretrained on exact pixels, and JPEG's ringing on 32-px stripes would
    add a difference between the tasks that is not the one the demo is about.
    """
    root = Path(root)
    sizes = split_sizes or DEMO_SPLIT_SIZES
    for i, split in enumerate(SPLITS):
        # Each split has a seed of its own: changing one split's size leaves the others' images alone.
        images, labels = shapes.make_images(classes, sizes[split], size, seed=(seed, 100 + i))
        counts = dict.fromkeys(range(len(classes)), 0)
        for image, label in zip(images, labels):
            name = shapes.class_name(classes[label])
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{name}.{counts[label]}.png")
            counts[label] += 1
    return root
