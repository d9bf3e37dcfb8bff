"""Procedurally drawn images of textured shapes: the demo's source and target tasks.

A class is a (shape, texture) pair: a shape outline (circle, star, ...) filled with a texture (stripes,
checks, dots, ...), drawn at a random position, size and rotation, in random colours, on a random
gradient background with noise. Colour, position and scale carry no class information, so telling
the classes apart takes features for shape and texture that are invariant to them.

The source task (what the demo's base is pretrained on) holds most pairs; the target task holds the
pairs the source never shows. Every target shape and texture appears in the source with other partners,
so a base that learned shape and texture features there can represent the new pairs; a random base
has no such features. Same seed, same pixels.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from PIL import Image, ImageDraw

# Bump when the drawing changes: it is part of the key of every base pretrained on these images.
GENERATOR_VERSION = 1

SHAPES = ("circle", "square", "triangle", "cross", "star", "hexagon", "ring", "crescent", "heart", "arrow")
TEXTURES = ("solid", "hstripes", "vstripes", "diagonal", "checks", "dots")
# The target task's classes: 3 shapes x 2 textures, none of them drawn in the source task. Balanced, so
# neither the shape nor the texture alone tells them apart.
TARGET_CLASSES = tuple(itertools.product(("triangle", "star", "heart"), ("hstripes", "checks")))
SOURCE_CLASSES = tuple(p for p in itertools.product(SHAPES, TEXTURES) if p not in TARGET_CLASSES)

_SUPERSAMPLE = 4  # shapes are drawn this many times larger, then downsampled: anti-aliased edges


def class_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-{pair[1]}"


@functools.cache
def _polygon(shape: str) -> list[np.ndarray]:
    """The shape as filled polygons in unit coordinates (radius about 1, y down); later ones are holes."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)

    def regular(n, start=-np.pi / 2):
        a = start + np.arange(n) * 2 * np.pi / n
        return np.stack([np.cos(a), np.sin(a)], axis=1)

    if shape == "circle":
        return [circle]
    if shape == "square":
        return [np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]])]
    if shape == "triangle":
        return [regular(3) * [1.0, 1.0] + [0, 0.2]]
    if shape == "cross":
        a, b = 0.33, 1.0
        return [np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a],
                          [-b, a], [-b, -a], [-a, -a]])]
    if shape == "star":
        outer, inner = regular(5), regular(5, -np.pi / 2 + np.pi / 5) * 0.42
        return [np.stack([outer, inner], axis=1).reshape(-1, 2)]
    if shape == "hexagon":
        return [regular(6, 0)]
    if shape == "ring":
        return [circle, circle * 0.5]
    if shape == "crescent":
        return [circle, circle * 0.85 + [0.45, -0.2]]
    if shape == "heart":
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [np.stack([x, y], axis=1) / 16.5 + [0, 0.1]]
    if shape == "arrow":
        return [np.array([[-1, -0.3], [0.1, -0.3], [0.1, -0.75], [1, 0], [0.1, 0.75], [0.1, 0.3], [-1, 0.3]])]
    raise ValueError(f"unknown shape {shape!r}")


def shape_mask(shape: str, size: int, centre, radius: float, angle: float) -> np.ndarray:
    """A size x size float mask in [0, 1] of the shape, anti-aliased."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for i, points in enumerate(_polygon(shape)):
        xy = (points @ rotation.T * radius + centre) * _SUPERSAMPLE
        draw.polygon(xy.ravel().tolist(), fill=0 if i else 255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


@functools.cache
def _grid(size: int) -> np.ndarray:
    """(y, x) pixel coordinates; read-only, shared by every image of this size."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    grid.flags.writeable = False
    return grid


def texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size pattern in {0, 1} (1 = the texture's second colour), random period and phase."""
    y, x = _grid(size)
    period = rng.uniform(4.0, 6.0) * size / 32
    tilt = rng.uniform(-0.15, 0.15)  # radians: the orientation stays recognisable
    u = x * np.cos(tilt) + y * np.sin(tilt) + rng.uniform(0, period)
    v = -x * np.sin(tilt) + y * np.cos(tilt) + rng.uniform(0, period)

    def wave(s):
        return np.sin(2 * np.pi * s / period)

    if name == "solid":
        return np.zeros((size, size), np.float32)
    if name == "hstripes":
        pattern = wave(v) > 0
    elif name == "vstripes":
        pattern = wave(u) > 0
    elif name == "diagonal":
        pattern = wave((u + v) / np.sqrt(2)) > 0
    elif name == "checks":
        pattern = wave(u) * wave(v) > 0
    elif name == "dots":
        du = (u % period) - period / 2
        dv = (v % period) - period / 2
        pattern = np.hypot(du, dv) < period * 0.28
    else:
        raise ValueError(f"unknown texture {name!r}")
    return pattern.astype(np.float32)


def _colour_pair(rng: np.random.Generator, min_distance: float) -> tuple[np.ndarray, np.ndarray]:
    while True:
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if np.linalg.norm(a - b) >= min_distance:
            return a, b


def draw(pair: tuple[str, str], size: int, rng: np.random.Generator) -> np.ndarray:
    """One size x size x 3 uint8 image of a (shape, texture) pair."""
    shape, fill = pair
    radius = rng.uniform(0.28, 0.45) * size
    centre = rng.uniform(radius * 0.8, size - radius * 0.8, 2)
    mask = shape_mask(shape, size, centre, radius, rng.uniform(-0.35, 0.35))[..., None]
    colour_a, colour_b = _colour_pair(rng, 110)
    pattern = texture(fill, size, rng)[..., None]
    foreground = colour_a * (1 - pattern) + colour_b * pattern
    # Background: its own colour, far from the shape's mean colour, with a linear gradient.
    while True:
        background = rng.uniform(0, 255, 3)
        if np.linalg.norm(background - foreground.reshape(-1, 3).mean(0)) >= 90:
            break
    y, x = _grid(size) / size - 0.5
    gradient = (x * rng.normal() + y * rng.normal())[..., None] * rng.uniform(0, 60, 3)
    pixels = mask * foreground + (1 - mask) * (background + gradient) + rng.normal(0, 8, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_images(classes, per_class: int, size: int, seed: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, size, size, 3], labels int [n]): per_class images of each class, shuffled.

    `seed` may be a tuple, e.g. (seed, purpose): independent streams for the source and target images."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(classes)), per_class)
    rng.shuffle(labels)
    images = np.stack([draw(classes[k], size, rng) for k in labels]) if len(labels) else \
        np.zeros((0, size, size, 3), np.uint8)
    return images, labels
