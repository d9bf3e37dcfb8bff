"""Pretrain a small convolutional base on the generated source task and cache it as a Keras model file.

The demo needs a base that was really pretrained, offline: this trains one on `featpipe.shapes`' source
classes and saves the whole classifier as ``base-<key>.keras``. Users of the file take its conv stack with
the ordinary model-file spec, cut at the last block: ``base-<key>.keras:features`` (see `backbone_spec`).

The file is cached under a key made of everything that determines it (generator version and task,
architecture, training settings, seeds, library versions), next to a record holding its SHA-256: a cached
file is reused only when the record exists and the digest matches, so featpipe never loads a model file
it cannot show it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from featpipe import atomic
from featpipe.errors import FeatpipeError
from featpipe.provenance import file_digest, key_digest
from featpipe.runs import read_json, write_json

log = logging.getLogger(__name__)

FEATURES_LAYER = "features"  # the last conv block's output: where users of the file cut it


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the pretrained base. The defaults are the demo's."""

    image_size: int = 32
    widths: tuple[int, ...] = (16, 32, 64, 128)
    per_class: int = 100  # source images per class
    validation_per_class: int = 20
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0  # the source images' and the initial weights'

    def key(self) -> str:
        """A digest of this config, the source task and the library versions it was trained with."""
        import numpy
        import PIL
        import tensorflow

        from featpipe import shapes

        identity = {
            "config": dataclasses.asdict(self),
            "generator": shapes.GENERATOR_VERSION,
            "source_classes": shapes.SOURCE_CLASSES,
            "versions": {"keras": keras.__version__, "tensorflow": tensorflow.__version__,
                         "numpy": numpy.__version__, "pillow": PIL.__version__},
        }
        return key_digest(identity)[:16]


@dataclass(frozen=True)
class PretrainedBase:
    path: Path  # the .keras file
    record: dict  # what the .json next to it says: key, config, digest, source accuracy, seconds
    reused: bool

    @property
    def spec(self) -> str:
        return backbone_spec(self.path)


def backbone_spec(path: str | os.PathLike) -> str:
    """The --backbone spec that takes the base's features out of the saved classifier."""
    return f"{os.path.abspath(path)}:{FEATURES_LAYER}"


def build_classifier(config: PretrainConfig, n_classes: int):
    """0-255 RGB images -> conv blocks (conv, batch norm, ReLU, max-pool) -> `features` -> softmax."""
    layers = keras.layers
    inputs = keras.Input((config.image_size, config.image_size, 3), name="image")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)  # the file carries its own preprocessing
    for i, width in enumerate(config.widths, 1):
        if i > 1:
            x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        # momentum 0.9: a short pretraining's moving statistics must catch up with the weights
        x = layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = layers.ReLU(name=FEATURES_LAYER if i == len(config.widths) else f"block{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_base")


class BaseCacheUnwritable(FeatpipeError):
    """The folder a pretrained base would be cached in cannot be written (a read-only HOME, say)."""


def pretrained_base(cache_dir: str | os.PathLike, config: PretrainConfig | None = None,
                    verbose: bool = True) -> PretrainedBase:
    """The cached base for `config`, pretraining it first when no verified copy is cached."""
    config = config or PretrainConfig()
    cache_dir = Path(cache_dir)
    key = config.key()
    path, record_path = cache_dir / f"base-{key}.keras", cache_dir / f"base-{key}.json"
    record = _verified_record(path, record_path, key)
    if record is not None:
        log.info("pretrained base: reusing %s (source-task validation accuracy %.1f%%)",
                 path, 100 * record["source_val_accuracy"])
        return PretrainedBase(path, record, reused=True)
    try:  # before minutes of pretraining: can the result be kept here?
        atomic.make_dirs(cache_dir)
        atomic.check_writable(path)
    except FeatpipeError as e:
        raise BaseCacheUnwritable(f"cannot keep the pretrained base in {cache_dir} ({e})") from None
    # As JSON stores it (tuples become lists): a fresh base and a reused one carry equal records.
    record = json.loads(json.dumps({**_pretrain(config, path, verbose), "key": key}))
    write_json(record_path, record)  # written last: a file without its record is never used
    return PretrainedBase(path, record, reused=False)


def _verified_record(path: Path, record_path: Path, key: str) -> dict | None:
    if not (path.is_file() and record_path.is_file()):
        return None
    try:
        record = read_json(record_path)
    except FeatpipeError as e:
        log.warning("pretrained base: ignoring %s (%s)", record_path, e)
        return None
    if record.get("key") != key or record.get("sha256") != file_digest(path):
        log.warning("pretrained base: %s does not match its record; pretraining again", path)
        return None
    return record


def train_classifier(config: PretrainConfig, classes=None, verbose: bool = True):
    """(classifier, Keras history): `config`'s network trained on freshly drawn images of `classes`
    (default: the source task's), validated on held-out ones."""
    import tensorflow as tf

    from featpipe import shapes

    start = time.perf_counter()
    classes = classes or shapes.SOURCE_CLASSES
    log.info("pretrained base: drawing the source task (%d classes x %d images, %d px)",
             len(classes), config.per_class, config.image_size)
    x_train, y_train = shapes.make_images(classes, config.per_class, config.image_size, (config.seed, 1))
    x_val, y_val = shapes.make_images(classes, config.validation_per_class, config.image_size, (config.seed, 2))
    log.info("pretrained base: training %d epochs on %d images (%.0f s so far)",
             config.epochs, len(x_train), time.perf_counter() - start)
    keras.utils.set_random_seed(config.seed)
    model = build_classifier(config, len(classes))
    steps = config.epochs * -(-len(x_train) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(steps, 1))
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(
        len(x_train), seed=config.seed).batch(config.batch_size)
    history = model.fit(train, validation_data=(x_val, y_val), epochs=config.epochs, verbose=0, shuffle=False,
                        callbacks=[_EpochLog(config.epochs)] if verbose else [])
    return model, history.history


def _pretrain(config: PretrainConfig, path: Path, verbose: bool) -> dict:
    from featpipe import shapes

    start = time.perf_counter()
    model, history = train_classifier(config, verbose=verbose)
    # Saved under a temporary name and renamed: an interrupted run never leaves a half-written base.
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.keras")
    model.save(partial)
    os.replace(partial, path)
    seconds = time.perf_counter() - start
    val_accuracy = float(history["val_accuracy"][-1])
    log.info("pretrained base: source-task validation accuracy %.1f%% (%d classes), %.0f s; saved %s",
             100 * val_accuracy, len(shapes.SOURCE_CLASSES), seconds, path)
    return {
        "config": dataclasses.asdict(config),
        "source_classes": [shapes.class_name(c) for c in shapes.SOURCE_CLASSES],
        "source_val_accuracy": val_accuracy,
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "seconds": seconds,
        "sha256": file_digest(path),
    }


class _EpochLog(keras.callbacks.Callback):
    """A log line per epoch: pretraining is the demo's longest step."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log.info("pretrained base: epoch %d/%d, loss %.3f, accuracy %.1f%%, validation %.1f%% (%.0f s)",
                 epoch + 1, self.epochs, logs.get("loss", float("nan")), 100 * logs.get("accuracy", 0),
                 100 * logs.get("val_accuracy", 0), time.perf_counter() - self._start)
