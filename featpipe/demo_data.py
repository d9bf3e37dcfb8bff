"""A small generated image dataset for the offline demo: textures a convolutional base can tell apart.

Each class is a pattern (checks, rings, horizontal or vertical stripes) drawn at a random frequency and
phase, with noise, in a colour family of its own (jittered): easy enough that even a random-initialised base
separates the classes reasonably, so the offline demo has something to show, while the patterns leave room
for pretrained features and fine-tuning to do better.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from featpipe.data import SPLITS

DEMO_CLASSES = ("checks", "rings", "hstripes", "vstripes")
DEMO_SPLIT_SIZES = {"train": 60, "validation": 20, "test": 20}


def _pattern(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 mask of the class's pattern, at a random frequency and phase."""
    y, x = np.mgrid[0:size, 0:size] / size
    freq, phase = rng.uniform(3, 7), rng.uniform(0, 2 * np.pi)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    waves = {
        "checks": lambda: np.sin(2 * np.pi * freq * x + phase) * np.sin(2 * np.pi * freq * y + phase),
        "rings": lambda: np.sin(2 * np.pi * freq * np.hypot(x - cx, y - cy) + phase),
        "hstripes": lambda: np.sin(2 * np.pi * freq * y + phase),
        "vstripes": lambda: np.sin(2 * np.pi * freq * x + phase),
    }
    return (waves[name]() > 0).astype(np.float64)


# A base colour per class; each image jitters it.
_COLOURS = {"checks": (200, 70, 60), "rings": (60, 170, 80), "hstripes": (70, 90, 210), "vstripes": (200, 180, 60)}


def demo_image(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    mask = _pattern(name, size, rng)[..., None]
    fg = np.clip(np.array(_COLOURS[name]) + rng.normal(0, 40, 3), 0, 255)
    bg = rng.uniform(0, 255, 3)
    pixels = mask * fg + (1 - mask) * bg + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_demo_dataset(
    root: str | os.PathLike,
    classes: tuple[str, ...] = DEMO_CLASSES,
    split_sizes: dict[str, int] | None = None,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write ``root/<split>/<class>/<i>.jpg``; returns root. Same seed, same images."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in SPLITS:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range((split_sizes or DEMO_SPLIT_SIZES)[split]):
                demo_image(name, size, rng).save(folder / f"{name}.{i}.jpg", quality=90)
    return root
