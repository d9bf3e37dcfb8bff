"""tf.data input pipelines shared by extraction and fine-tuning: read, decode, resize, batch, prefetch.

Undecodable files (corrupt, truncated, empty, not an image) are dropped inside the pipeline; every element
carries its row index, so the caller learns which rows went missing and can record them.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from PIL import Image

AUTOTUNE = tf.data.AUTOTUNE


def decode_and_resize(contents: tf.Tensor, size: tuple[int, int], crop_to_aspect_ratio: bool = False) -> tf.Tensor:
    """Encoded bytes (JPEG/PNG/BMP/GIF first frame; any mode) -> float32 RGB 0-255 at `size`."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    if crop_to_aspect_ratio:
        image = _center_crop_to_aspect(image, size[0] / size[1])
    # Bilinear without antialiasing, as Keras' image_dataset_from_directory resizes.
    return tf.image.resize(image, size, method="bilinear")


def _center_crop_to_aspect(image: tf.Tensor, aspect: float) -> tf.Tensor:
    """The largest centred window of height/width `aspect` (Keras' crop_to_aspect_ratio)."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    crop_h = tf.cast(tf.minimum(h, w * aspect), tf.int32)
    crop_w = tf.cast(tf.minimum(w, h / aspect), tf.int32)
    top = (shape[0] - crop_h) // 2
    left = (shape[1] - crop_w) // 2
    return image[top : top + crop_h, left : left + crop_w]


def indexed_images(
    files: list[str],
    size: tuple[int, int],
    crop_to_aspect_ratio: bool = False,
    rows: np.ndarray | None = None,
) -> tf.data.Dataset:
    """(image, row) pairs for `rows` of `files` (all by default), in order; unreadable files are dropped."""
    rows = np.arange(len(files)) if rows is None else np.asarray(rows, dtype=np.int64)
    paths = tf.constant([files[i] for i in rows], tf.string)
    dataset = tf.data.Dataset.from_tensor_slices((paths, rows))

    def load(path, row):
        return decode_and_resize(tf.io.read_file(path), size, crop_to_aspect_ratio), row

    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.ignore_errors()


def unreadable_reason(path: str) -> str:
    """Why a file the pipeline dropped cannot be used, for the record of skipped files."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as image:
            image.load()
    except OSError as e:  # PIL's UnidentifiedImageError and truncation errors are OSErrors
        return str(e).replace(f" {path!r}", "").replace(path, "<file>") or type(e).__name__
    return "TensorFlow could not decode this image"


def batched(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def labeled_images(
    files: list[str],
    labels: list[int],
    size: tuple[int, int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    crop_to_aspect_ratio: bool = False,
) -> tf.data.Dataset:
    """Batches of (image, label) for training; unreadable files are skipped, shuffling is seeded."""
    label_of = tf.constant(list(labels), tf.int32)
    dataset = indexed_images(files, size, crop_to_aspect_ratio)
    dataset = dataset.map(lambda image, index: (image, tf.gather(label_of, index)))
    if shuffle:
        # The dataset is re-shuffled each epoch from the seed: reproducible, yet not the same order every epoch.
        dataset = dataset.shuffle(min(len(files), 10_000), seed=seed, reshuffle_each_iteration=True)
    return batched(dataset, batch_size)
