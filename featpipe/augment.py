"""Data augmentation specs -> Keras random-transform layers, applied only while training.

A spec is a comma-separated list of transforms, ``flip,rotation=0.1,zoom=0.2`` (the recipe of Deep Learning
with Python ch. 8: featpipe.choices.DEFAULT_AUGMENT), or ``none``. Images are float 0-255 RGB, as the pipeline
makes them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from featpipe.errors import ArgumentError, FeatpipeError

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")

# name -> (default value, largest allowed factor, layer class, its keyword arguments for a value).
_TRANSFORMS = {
    "flip": ("horizontal", None, keras.layers.RandomFlip, lambda mode: {"mode": mode}),
    "rotation": (None, 1.0, keras.layers.RandomRotation, lambda f: {"factor": f}),
    "zoom": (None, 0.99, keras.layers.RandomZoom, lambda f: {"height_factor": f}),
    "translation": (None, 0.99, keras.layers.RandomTranslation, lambda f: {"height_factor": f, "width_factor": f}),
    "contrast": (None, 1.0, keras.layers.RandomContrast, lambda f: {"factor": f, "value_range": (0, 255)}),
    "brightness": (None, 1.0, keras.layers.RandomBrightness, lambda f: {"factor": f, "value_range": (0, 255)}),
}
RANDOM_LAYERS = tuple(layer_class for _, _, layer_class, _ in _TRANSFORMS.values())


def parse_augment(spec: str | None) -> list[tuple[str, str | float]]:
    """``flip,rotation=0.1`` -> [("flip", "horizontal"), ("rotation", 0.1)]; ``none`` or empty -> []."""
    text = (spec or "").replace(" ", "")
    if text.lower() in ("", "none"):
        return []
    transforms = [_parse_item(item) for item in text.split(",")]
    names = [name for name, _ in transforms]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ArgumentError(f"{{augment}} names {', '.join(repeated)} more than once", "augment")
    return transforms


def _parse_item(item: str) -> tuple[str, str | float]:
    name, _, value = item.partition("=")
    if name not in _TRANSFORMS:
        raise FeatpipeError(f"unknown augmentation {name!r}; choose from {', '.join(_TRANSFORMS)} (or none)")
    default, largest, _, _ = _TRANSFORMS[name]
    if name == "flip":
        mode = value or default
        if mode not in FLIP_MODES:
            raise FeatpipeError(f"flip mode must be one of {', '.join(FLIP_MODES)}, got {mode!r}")
        return name, mode
    try:
        factor = float(value)
    except ValueError:
        raise FeatpipeError(f"augmentation {name} needs a factor, e.g. {name}=0.1; got {item!r}") from None
    if not 0 < factor <= largest:
        raise FeatpipeError(f"augmentation {name} factor must be in (0, {largest:g}], got {factor:g}")
    return name, factor


def canonical_augment(spec: str | None) -> str:
    """One spelling per augmentation (for run records and keys): ``flip=horizontal,rotation=0.1`` or ``none``."""
    return ",".join(f"{name}={value}" for name, value in parse_augment(spec)) or "none"


def augmentation(spec: str | None, seed: int = 0) -> keras.Sequential | None:
    """The random layers a spec names, in order, seeded; None for no augmentation."""
    transforms = parse_augment(spec)
    if not transforms:
        return None
    layers = []
    for i, (name, value) in enumerate(transforms):
        _, _, layer_class, kwargs = _TRANSFORMS[name]
        layers.append(layer_class(**kwargs(value), seed=seed + i, name=f"augment_{name}"))
    return keras.Sequential(layers, name="augmentation")


def augment_dataset(dataset: tf.data.Dataset, layers: keras.Layer) -> tf.data.Dataset:
    """Augment (image, label) batches inside tf.data: on a CPU this overlaps with training steps."""
    augmented = dataset.map(lambda images, labels: (layers(images, training=True), labels),
                            num_parallel_calls=tf.data.AUTOTUNE)
    return augmented.prefetch(tf.data.AUTOTUNE)
