"""tf.data input pipelines shared by extraction and fine-tuning: read, decode, resize, batch, prefetch.

Every file is read once, in Python threads, and checked before it is decoded: it must be a regular, readable
file (a FIFO never blocks the read, see `featpipe.data.read_regular_file`) whose decode would hold at most
`max_pixels` pixels, judged from its header alone, so a decompression bomb is never decoded or allocated. A
JPEG's header is read inside the pipeline by libjpeg (`tf.io.extract_jpeg_shape`), the library that then decodes
it: the size judged is the size decoded, and the check costs no Python time. Other formats are judged by PIL in
the reading threads.

A JPEG is decoded at the largest DCT-domain reduction (1/2, 1/4 or 1/8, libjpeg's scaled decoding) whose
both sides stay at or above the target size, then resized: a 100-megapixel photo is a photo, decoded at an
eighth of its side for a 224 x 224 input, in a fraction of the time and memory. The pixel cap applies to that
decode; PNG, GIF and BMP, which decode at full size only, are capped at full size. This rule
(`DECODE_RULE`) determines the pixels, so it is a fact of the cache key. Files that fail a check, or that
TensorFlow cannot decode (corrupt, truncated, not an image), are dropped inside the pipeline; every element
carries its row index, so the caller learns which rows went missing and records them with `unreadable_reason`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from PIL import Image, JpegImagePlugin

from featpipe.data import UnusableFile, read_regular_file
from featpipe.errors import FeatpipeError
from featpipe.python_items import PassSource, python_items

AUTOTUNE = tf.data.AUTOTUNE
# PIL's own default: about a 9500 x 9500 image, 268 MB as RGB uint8. Raise it with FEATPIPE_MAX_IMAGE_PIXELS.
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "FEATPIPE_MAX_IMAGE_PIXELS"
# Reading threads, and files read ahead per window (bounds the memory of bytes waiting for the decoder).
READ_THREADS = 8
READ_WINDOW = 64
# JPEG decoding reductions libjpeg offers in the DCT domain, largest first; the index of one in
# (1, 2, 4, 8) is its decode branch (0: full size, as every other format).
JPEG_REDUCTIONS = (8, 4, 2)
DECODE_RULE = "jpeg: largest DCT reduction of 1/2, 1/4, 1/8 keeping both sides >= the target size; others: full size"
_JPEG_FORMATS = ("JPEG", "MPO")
_JPEG_MAGIC = b"\xff\xd8\xff"
# The decode branch of a file whose header the pipeline checks (a JPEG): see `_jpeg_branch`.
JPEG_CHECKED_IN_PIPELINE = -1


def max_pixels(value: int | None = None) -> int:
    """The pixel cap: `value`, else $FEATPIPE_MAX_IMAGE_PIXELS, else PIL's default."""
    if value is None:
        text = os.environ.get(MAX_PIXELS_ENV, "")
        try:
            value = int(text) if text else DEFAULT_MAX_PIXELS
        except ValueError:
            raise FeatpipeError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise FeatpipeError(f"the image pixel limit must be positive, got {value}")
    return value


def _max_bytes(pixels: int) -> int:
    # An encoded image is rarely bigger than its raw RGBA pixels; the margin covers metadata.
    return 4 * pixels + (16 << 20)


def check_header(data: bytes, limit: int, size: tuple[int, int] | None = None) -> Image.Image:
    """The image PIL identifies in `data` (header read only), refused (UnusableFile) when decoding it would
    hold more than `limit` pixels -- all frames of a GIF count, as TensorFlow decodes them all; a JPEG counts
    at the scale it will be decoded at for a target `size` (height, width; see `jpeg_reduction`)."""
    image = _open_header(data, limit)
    frames = image.n_frames if image.format == "GIF" else 1
    width, height = image.size
    reduction = jpeg_reduction(image, size)
    decoded = -(-width // reduction) * -(-height // reduction)
    if decoded * frames > limit:
        claim = f"{width}x{height} pixels" + (f" x {frames} frames" if frames > 1 else "")
        if reduction > 1:
            claim += f" ({decoded} decoded at 1/{reduction})"
        raise UnusableFile(_too_big(claim, limit))
    return image


def _open_header(data: bytes, limit: int) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:  # over PIL's own cap, twice its default: judged here instead
            if data.startswith(_JPEG_MAGIC):
                try:  # the plugin itself reads the header without PIL's cap; a JPEG may decode reduced
                    return JpegImagePlugin.JpegImageFile(io.BytesIO(data))
                except Exception as error:  # noqa: BLE001  hostile headers raise many kinds
                    raise UnusableFile(_pil_reason(error)) from None
            claimed = re.search(r"\((\d+) pixels\)", str(e))
            raise UnusableFile(_too_big(f"{claimed[1] if claimed else 'over ' + str(2 * DEFAULT_MAX_PIXELS)} pixels",
                                        min(limit, 2 * DEFAULT_MAX_PIXELS))) from None
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds on hostile headers; all mean "not usable"
            raise UnusableFile(_pil_reason(e)) from None


def jpeg_reduction(image: Image.Image, size: tuple[int, int] | None) -> int:
    """1, 2, 4 or 8: the largest DCT reduction at which a JPEG still covers `size` (height, width) on both
    sides (libjpeg rounds a reduced side up); 1 for other formats or without a target size. Centre-cropping
    to the target's aspect ratio needs the same, so it holds with --crop-to-aspect-ratio too."""
    if size is None or image.format not in _JPEG_FORMATS:
        return 1
    width, height = image.size
    return next((r for r in JPEG_REDUCTIONS if -(-height // r) >= size[0] and -(-width // r) >= size[1]), 1)


def _too_big(claim: str, limit: int) -> str:
    return f"image claims {claim}, over the {limit}-pixel limit (decompression bomb? raise {MAX_PIXELS_ENV} if real)"


def read_image(path: str, limit: int, size: tuple[int, int] | None = None) -> bytes:
    """The bytes of `path`, once it is known to be a regular, readable image of sane size; UnusableFile if not."""
    data = read_regular_file(path, _max_bytes(limit))
    check_header(data, limit, size)
    return data


def _pipeline_branch(data: bytes, limit: int, size: tuple[int, int]) -> int:
    """The decode branch a pipeline is handed: a JPEG's is decided, and its size checked, in the pipeline
    (`_jpeg_branch`); any other image is checked here (PIL) and decodes at full size."""
    if data.startswith(_JPEG_MAGIC):
        return JPEG_CHECKED_IN_PIPELINE
    check_header(data, limit, size)
    return 0


def _jpeg_branch(contents: tf.Tensor, size: tuple[int, int], limit: int) -> tf.Tensor:
    """A JPEG's decode branch (log2 of `jpeg_reduction`), from its header as libjpeg reads it; an error (which
    drops the image) when that decode would hold more than `limit` pixels, before anything is decoded."""
    shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)
    reductions = tf.constant([*JPEG_REDUCTIONS, 1], tf.int64)
    height, width = -(-shape[0] // reductions), -(-shape[1] // reductions)  # libjpeg rounds a reduced side up
    covers = tf.concat([(height[:-1] >= size[0]) & (width[:-1] >= size[1]), [True]], axis=0)
    choice = tf.argmax(tf.cast(covers, tf.int32), output_type=tf.int32)  # the first: the largest reduction
    check = tf.debugging.assert_less_equal(height[choice] * width[choice], tf.constant(limit, tf.int64),
                                           message="JPEG over the pixel limit")
    with tf.control_dependencies([check]):
        return tf.identity(len(JPEG_REDUCTIONS) - choice)


def _pil_reason(error: Exception) -> str:
    text = str(error).replace("<_io.BytesIO object", "<data").strip()
    if "cannot identify image file" in text:
        return "cannot identify image file"
    return text or type(error).__name__


def decode_and_resize(contents: tf.Tensor, size: tuple[int, int], crop_to_aspect_ratio: bool = False,
                      branch: int | tf.Tensor = 0) -> tf.Tensor:
    """Encoded bytes (JPEG/PNG/BMP/GIF first frame; any mode) -> float32 RGB 0-255 at `size`.

    `branch` (a tensor in a pipeline): 0 decodes at full size; 1, 2, 3 decode a JPEG at 1/2, 1/4, 1/8
    in the DCT domain (see `jpeg_reduction`)."""
    def full():
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    if isinstance(branch, int) and branch == 0:
        image = full()
    else:
        reduced = [lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r) for r in (2, 4, 8)]
        image = tf.switch_case(tf.cast(branch, tf.int32), [full, *reduced])
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
    limit: int | None = None,
    sieve=None,
    parallel: int | None = None,
) -> tf.data.Dataset:
    """(image, row) pairs for `rows` of `files` (all by default), in order; unusable files are dropped.

    `limit` caps the pixels an image may claim (default: `max_pixels()`). `sieve(row, digest)`, if given, is
    called with the content digest (`content_digest`) of every regular file read, computed from the bytes
    already read (no second read), in the reading threads, ahead of the consumer: every row before one the
    dataset yields has been sieved. The rows it returns True for are neither checked nor decoded (their
    features come from elsewhere: featpipe.reuse). `parallel`: images decoded at once (default: tf.data's
    autotuner decides).
    """
    rows = np.arange(len(files)) if rows is None else np.asarray(rows, dtype=np.int64)
    limit = max_pixels(limit)
    paths = [files[i] for i in rows]

    def windows_from(start):  # a pass over the windows from window `start` on, as arrays
        first = start * READ_WINDOW
        for data, found, branches in _read_windows(paths[first:], rows[first:].tolist(), limit, size, sieve):
            yield np.array(data, dtype=object), np.array(found, np.int64), np.array(branches, np.int32)

    # A window of checked files crosses from Python into TensorFlow at once: one call per window, not one per
    # image, which cost about a third of the decode's CPU time. Converting a window's bytes into a tensor is one
    # thread's work, so the next window is converted ahead (prefetch), and each image's bytes are taken from its
    # window inside the parallel map, not one at a time before it (unbatch): either way the decoders would wait,
    # and on 2 cores a sixth of them idled.
    spec = (tf.TensorSpec((None,), tf.string), tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.int32))
    windows = -(-len(paths) // READ_WINDOW)
    dataset = python_items(PassSource(windows_from, windows), tf.data.Dataset.range(windows), spec)
    dataset = dataset.prefetch(1).flat_map(_window_items)

    # Not converted by autograph (it has no Python control flow on tensors): converting it cost 0.25 s of Python
    # at the start of every run, while the base is traced in another thread.
    @tf.autograph.experimental.do_not_convert
    def decode(window, item):
        index, row, branch = item
        data = window[index]
        branch = tf.cond(branch == JPEG_CHECKED_IN_PIPELINE, lambda: _jpeg_branch(data, size, limit), lambda: branch)
        return decode_and_resize(data, size, crop_to_aspect_ratio, branch), row

    dataset = dataset.map(decode, num_parallel_calls=parallel or AUTOTUNE, deterministic=True)
    return dataset.ignore_errors()


@tf.autograph.experimental.do_not_convert
def _window_items(data: tf.Tensor, rows: tf.Tensor, branches: tf.Tensor) -> tf.data.Dataset:
    """(window, (index, row, branch)) for each image of a window: the window itself, not a copy, each time."""
    return tf.data.Dataset.zip(tf.data.Dataset.from_tensors(data).repeat(),
                               tf.data.Dataset.from_tensor_slices((tf.range(tf.size(rows)), rows, branches)))


def content_digest(data: bytes) -> bytes:
    """An image's identity: the SHA-256 of its bytes (32 bytes). With the model side of a cache key it
    determines the features, whatever the file's name, folder or time."""
    return hashlib.sha256(data).digest()


def _read_windows(paths: list[str], rows: list[int], limit: int, size: tuple[int, int], sieve=None):
    """The usable files of `paths`, a window at a time and in order: (bytes, rows, decode branches) of each
    window, the files that are unusable or taken by `sieve` left out.

    READ_THREADS threads read and check a window in chunks (the digest too: hashlib releases the GIL), and the
    next window is read while this one is consumed, so the readers never wait for the consumer. With the window
    `indexed_images` converts ahead and the one it decodes from, at most four windows of bytes are held."""
    def read(path, row):
        try:
            data = read_regular_file(path, _max_bytes(limit))
            if sieve is not None and sieve(row, content_digest(data)):
                return None  # known: not decoded, so its header need not be checked either
            return data, _pipeline_branch(data, limit, size)
        except UnusableFile:
            return None

    def read_chunk(start, stop):
        return [(row, read(paths[i], row)) for i, row in zip(range(start, stop), rows[start:stop])]

    def submit(start):
        chunk = -(-READ_WINDOW // READ_THREADS)
        stop = min(start + READ_WINDOW, len(paths))
        return [pool.submit(read_chunk, i, min(i + chunk, stop)) for i in range(start, stop, chunk)]

    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="featpipe-read") as pool:
        ahead = submit(0)
        for start in range(0, len(paths), READ_WINDOW):
            futures, ahead = ahead, submit(start + READ_WINDOW)  # the next window is read while this one is used
            window = [item for future in futures for item in future.result()]
            found = [(row, item) for row, item in window if item is not None]
            yield [item[0] for _, item in found], [row for row, _ in found], [item[1] for _, item in found]


def unreadable_reason(path: str, limit: int | None = None, size: tuple[int, int] | None = None) -> str:
    """Why a file the pipeline dropped cannot be used, for the record of skipped files. Without the target
    `size` a JPEG is judged at its smallest decode (1/8), the most any target allows."""
    try:
        data = read_regular_file(path, _max_bytes(max_pixels(limit)))
        image = check_header(data, max_pixels(limit), size or (1, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Its size was checked: decoding it is safe; a JPEG at the reduction checked (PIL's draft).
            reduction = jpeg_reduction(image, size or (1, 1))
            if reduction > 1:
                image.draft(image.mode, (-(-image.size[0] // reduction), -(-image.size[1] // reduction)))
            image.load()
    except UnusableFile as e:
        return e.reason
    except Exception as e:  # noqa: BLE001  any PIL failure on a hostile file is a reason, not a crash
        return _pil_reason(e)
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
