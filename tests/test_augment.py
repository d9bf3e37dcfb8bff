"""featpipe.augment: spec parsing, the layers it builds and augmentation inside tf.data."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from featpipe.augment import RANDOM_LAYERS, augment_dataset, augmentation, canonical_augment, parse_augment
from featpipe.choices import DEFAULT_AUGMENT
from featpipe.errors import FeatpipeError


def test_default_is_the_books_recipe():
    assert parse_augment(DEFAULT_AUGMENT) == [("flip", "horizontal"), ("rotation", 0.1), ("zoom", 0.2)]
    layers = augmentation(DEFAULT_AUGMENT).layers
    assert [type(layer) for layer in layers] == [keras.layers.RandomFlip, keras.layers.RandomRotation,
                                                 keras.layers.RandomZoom]
    assert layers[0].mode == "horizontal" and layers[1].factor == (-0.1, 0.1) and layers[2].height_factor == 0.2


@pytest.mark.parametrize("spec, canonical", [
    ("none", "none"), ("", "none"), (None, "none"), ("NONE", "none"),
    ("zoom=0.2, flip", "zoom=0.2,flip=horizontal"),
    ("flip=vertical,translation=0.1,contrast=0.3,brightness=0.2",
     "flip=vertical,translation=0.1,contrast=0.3,brightness=0.2"),
])
def test_canonical_spelling(spec, canonical):
    assert canonical_augment(spec) == canonical


def test_none_builds_no_layers():
    assert augmentation("none") is None


def test_every_transform_builds_a_random_layer():
    model = augmentation("flip=horizontal_and_vertical,rotation=0.2,zoom=0.1,translation=0.1,contrast=0.2,brightness=0.1")
    assert len(model.layers) == 6 and all(isinstance(layer, RANDOM_LAYERS) for layer in model.layers)
    images = np.full((2, 16, 16, 3), 128, np.float32)
    assert model(images, training=True).shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(model(images, training=False), images)  # inference leaves images alone


@pytest.mark.parametrize("spec, message", [
    ("blur=0.1", "unknown augmentation 'blur'"),
    ("rotation", "needs a factor"),
    ("zoom=big", "needs a factor"),
    ("zoom=1.5", r"zoom factor must be in \(0, 0.99\]"),
    ("rotation=0", "must be in"),
    ("flip=diagonal", "flip mode must be one of"),
    ("flip,zoom=0.1,flip=vertical", "names flip more than once"),
])
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(FeatpipeError, match=message):
        parse_augment(spec)


def test_augment_dataset_transforms_images_differently_each_epoch_and_keeps_labels():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
    labels = np.arange(8, dtype=np.int32)
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    dataset = augment_dataset(batches, augmentation("flip,rotation=0.2,zoom=0.2", seed=1))

    def epoch():
        pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
        return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])

    (first, first_labels), (second, _) = epoch(), epoch()
    np.testing.assert_array_equal(first_labels, labels)
    assert first.shape == images.shape and first.dtype == np.float32
    assert not np.allclose(first, images) and not np.allclose(first, second)
    assert 0 <= first.min() and first.max() <= 255
