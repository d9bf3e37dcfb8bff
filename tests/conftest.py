"""Shared fixtures: tiny generated image datasets and tiny random-initialised backbones."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# Each class is a colour a convolutional base can tell apart even with random weights.
CLASS_COLOURS = {"cat": (200, 60, 40), "dog": (40, 80, 200), "fox": (60, 180, 60)}


def make_image(path: Path, colour, size=(24, 20), mode="RGB", seed=0) -> Path:
    """A noisy image of one dominant colour, saved in the format the suffix names."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_dataset(root: Path, classes=("cat", "dog"), per_split=None, corrupt=False) -> Path:
    """ROOT/<split>/<class>/<image> with mixed sizes, modes and formats; `corrupt` adds bad files to train."""
    per_split = per_split or {"train": 6, "validation": 3, "test": 3}
    formats = [("RGB", ".jpg"), ("L", ".png"), ("RGBA", ".png"), ("RGB", ".bmp"), ("P", ".gif"), ("CMYK", ".jpg")]
    seed = 0
    for split, n in per_split.items():
        for name in classes:
            for i in range(n):
                mode, ext = formats[i % len(formats)]
                size = (16 + (i * 7) % 23, 14 + (i * 5) % 19)
                make_image(root / split / name / f"{name}.{i}{ext}", CLASS_COLOURS[name], size, mode, seed)
                seed += 1
    if corrupt:
        bad = root / "train" / classes[0]
        (bad / "zero.jpg").write_bytes(b"")
        (bad / "text.png").write_text("not an image")
        good = (bad / f"{classes[0]}.0.jpg").read_bytes()
        (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def corrupt_dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data", corrupt=True)


def tiny_cnn(input_size=(32, 32), channels=8):
    """A two-conv random-initialised base with BatchNormalization (the layer kind fine-tuning cares about)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*input_size, 3))
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    x = keras.layers.Conv2D(channels * 2, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> str:
    """A saved .keras base: 32x32 input, 8x8x16 feature maps."""
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    tiny_cnn().save(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_preset_dir(tmp_path_factory) -> str:
    """A local keras-hub preset (a small Xception) with an ImageConverter, as save_to_preset writes it."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("presets") / "tiny_xception"
    backbone = keras_hub.models.XceptionBackbone(
        stackwise_conv_filters=[[8, 8], [16, 16]], stackwise_pooling=[True, False]
    )
    backbone.save_to_preset(str(path))
    keras_hub.layers.ImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0).save_to_preset(str(path))
    return str(path)
