"""The end-to-end model and its two phases: `FineTuner`.

1. "frozen": image -> augmentation -> the base's preprocessing -> frozen base (inference mode) -> pooling
   -> Dense(256, relu) -> Dropout(0.5) -> sigmoid unit (binary) or softmax; only the head trains.
2. "fine-tune": unfreeze the top of the base (BatchNormalization stays frozen and in inference mode),
   recompile with a low learning rate and continue the epoch count.

On a node with several GPUs both phases run data-parallel under `tf.distribute.MirroredStrategy`: the batch
size is per device and every step takes batch size x replicas images; on one device nothing changes.

The tuner trains its own copy of the base: the caller's Backbone (whose identity names the weights it
was loaded with, and so keys cached features) is never changed.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from featpipe import runtime
from featpipe.augment import augment_dataset, augmentation, canonical_augment
from featpipe.backbones import Backbone, pooling_layer
from featpipe.choices import DEFAULT_AUGMENT, OPTIMIZERS, POOLINGS
from featpipe.data import ImageFolder
from featpipe.errors import ArgumentError, FeatpipeError
from featpipe.finetune.resume import EpochCheckpoint, ResumeState, checkpoint_directory
from featpipe.heads.base import as_class_probs
from featpipe.heads.estimators import scale_output_temperature
from featpipe.metrics import classification_metrics
from featpipe.model_parts import (
    all_layers, apply_layers, class_probabilities, classifier_layers, compiled_forward, loss_name, make_optimizer,
)
from featpipe.pipeline import batched, indexed_images, labeled_images
from featpipe.preprocessing import preprocessing_layer
from featpipe.run_predictions import SplitPredictions

PHASES = ("frozen", "fine-tune")


class InferenceMode(keras.layers.Layer):
    """Calls the base with training=False whatever the outer training flag.

    Keras 3 functional models hand the outer `training` flag to every layer, overriding a training=False
    written in the graph; this wrapper keeps the base's BatchNormalization statistics and dropout in
    inference mode while its weights train. Only the training model uses it (it is never saved whole).
    """

    def __init__(self, base: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.base = base

    def call(self, images):
        return self.base(images, training=False)

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)


class ReplicaAgreedLossScale(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling with the skip-or-apply decision agreed by every replica.

    Keras 3 (3.15) takes the first replica's verdict on its own gradients, before they are all-reduced: when
    another replica's overflowed, the step applies inf/NaN and the weights are lost. Overflow is routine
    while the scale settles, so every replica's verdict is all-reduced: a step any replica overflowed is skipped.
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        overflowed = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
        return tf.equal(overflowed, 0.0)


CALIBRATIONS = ("none", "temperature")


class FineTuner:
    """Augmentation + frozen base + new head, then fine-tuning: scikit-learn habits, Keras underneath.

    `unfreeze` says what phase 2 trains in the base: ``top:N`` (its last N layers), ``from:LAYER``
    (that layer and all after it) or ``all``. `augment_in_model` None picks by device: inside the model on a
    GPU, in the tf.data pipeline on a CPU. `precision` (auto | float32 | mixed) is the dtype policy the new
    layers are built with; `seed` seeds the head, the augmentation and the shuffling. After `fit`: `base_`
    (the tuner's own copy of the base), `model_` (0-255 images -> class probabilities, no augmentation),
    `history_`, `best_` ({"phase", "epoch", "val_loss"}), `phase_seconds_`, `trainable_params_`, `distribution_`.

    `devices` says where training runs: None means every visible GPU. Two or more devices train under
    `tf.distribute.MirroredStrategy` (one replica each, `batch_size` images per replica per step); one named
    device under `OneDeviceStrategy`; None on a machine with at most one GPU uses no strategy at all, the
    single-device path unchanged.
    """

    def __init__(self, backbone: Backbone, *, augment: str | None = DEFAULT_AUGMENT, pooling: str = "avg",
                 epochs: int = 10, fine_tune_epochs: int = 10, batch_size: int = 32, learning_rate: float = 1e-3,
                 fine_tune_learning_rate: float = 1e-5, optimizer: str = "rmsprop", unfreeze: str = "top:4",
                 dense_units: int = 256, dropout: float = 0.5, crop_to_aspect_ratio: bool = False,
                 augment_in_model: bool | None = None, precision: str = "auto",
                 devices: Sequence[str] | None = None, calibration: str = "none", seed: int = 0):
        self.backbone = backbone
        self.augment = augment
        self.pooling = pooling
        self.epochs = epochs
        self.fine_tune_epochs = fine_tune_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.optimizer = optimizer
        self.unfreeze = unfreeze
        self.dense_units = dense_units
        self.dropout = dropout
        self.crop_to_aspect_ratio = crop_to_aspect_ratio
        self.augment_in_model = augment_in_model
        self.precision = precision
        self.devices = devices
        self.calibration = calibration
        self.seed = seed

    def params(self) -> dict:
        """The hyperparameters (what run.json records and the run key covers)."""
        return {
            "augment": canonical_augment(self.augment), "pooling": self.pooling, "epochs": self.epochs,
            "fine_tune_epochs": self.fine_tune_epochs, "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "fine_tune_learning_rate": self.fine_tune_learning_rate,
            "optimizer": self.optimizer, "unfreeze": self.unfreeze, "dense_units": self.dense_units,
            "dropout": self.dropout, "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
            # Only when used: the run keys of runs from before calibration existed stay the same.
            **({"calibration": self.calibration} if self.calibration != "none" else {}),
        }

    @property
    def compute_dtype(self) -> str:
        """The dtype the new layers compute in (part of the run key)."""
        return runtime.compute_dtype(self.precision)

    def training_devices(self) -> list[str]:
        """The devices training runs on: `devices`, else every visible GPU (none on a CPU-only machine)."""
        if self.devices is not None:
            return list(self.devices)
        # Counted from the physical list, which does not initialise the GPUs (memory growth is set later).
        return [f"/gpu:{i}" for i in range(len(runtime.gpus()))]

    @property
    def replicas(self) -> int:
        """How many model replicas train in step (part of the run key when more than one)."""
        return max(len(self.training_devices()), 1)

    @property
    def global_batch_size(self) -> int:
        """Images per training step over all replicas: what tf.data batches at."""
        return self.batch_size * self.replicas

    def distribution(self) -> tf.distribute.Strategy | None:
        """The tf.distribute strategy both phases are built, compiled, checkpointed and trained under; None
        for the single-device path (no strategy at all, so its numbers are exactly those of a plain fit)."""
        devices = self.training_devices()
        if len(devices) > 1:
            return mirrored_strategy(tuple(tf.DeviceSpec.from_string(d).to_string() for d in devices))
        if self.devices:
            return tf.distribute.OneDeviceStrategy(devices[0])
        return None

    # --- checks -----------------------------------------------------------------------------------------

    def check(self) -> None:
        """Reject bad options with one clear line, before any training starts."""
        for name in ("epochs", "fine_tune_epochs"):
            if getattr(self, name) < 0:
                raise ArgumentError(f"{{{name}}} must be 0 or more, got {getattr(self, name)}", name)
        if self.epochs == self.fine_tune_epochs == 0:
            raise ArgumentError("{epochs} and {fine_tune_epochs} are both 0: nothing to train", "epochs",
                                "fine_tune_epochs")
        if self.batch_size < 1:
            raise ArgumentError(f"{{batch_size}} must be positive, got {self.batch_size}", "batch_size")
        if self.optimizer not in OPTIMIZERS:
            raise ArgumentError(f"{{optimizer}} must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
                                "optimizer")
        if self.pooling not in POOLINGS:
            raise FeatpipeError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            if not getattr(self, name) > 0:
                raise ArgumentError(f"{{{name}}} must be positive, got {getattr(self, name)}", name)
        if not 0 <= self.dropout < 1 or self.dense_units < 1:
            raise FeatpipeError("dropout must be in [0, 1) and dense units positive")
        if self.devices is not None and (isinstance(self.devices, str) or not self.devices
                                         or len(set(self.devices)) != len(self.devices)):
            raise FeatpipeError(f"devices must be a list of distinct device names, got {self.devices!r}")
        if self.calibration not in CALIBRATIONS:
            raise FeatpipeError(f"--calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        canonical_augment(self.augment)
        runtime.policy_name(self.precision)
        runtime.check_batch_fits(self.backbone.image_size, self.batch_size)  # else tf.data blocks, deaf to Ctrl-C
        unfreeze_start(self.backbone.model, self.unfreeze)

    def plan(self) -> list[tuple[str, int, int, float]]:
        """(phase, first epoch, end epoch, learning rate) of each phase that runs."""
        phases, start = [], 0
        for name, epochs, rate in zip(PHASES, (self.epochs, self.fine_tune_epochs),
                                      (self.learning_rate, self.fine_tune_learning_rate)):
            if epochs:
                phases.append((name, start, start + epochs, rate))
                start += epochs
        return phases

    # --- training ---------------------------------------------------------------------------------------

    def fit(self, data: ImageFolder, checkpoint_dir: str | os.PathLike | None = None, callbacks=(),
            verbose: int | str = 0) -> "FineTuner":
        """Train both phases on data's train split, selecting on its validation split.

        Each phase keeps the weights with the lowest validation loss seen so far (across phases) and
        restores them at its end. With `checkpoint_dir`, progress is committed there after every epoch and
        picked up again by a later fit with the same directory; `callbacks` are extra Keras callbacks.
        """
        self.check()
        data.require_classes("train")  # up front, not after an epoch
        require_split(data, "validation", "carve one with --val-fraction")
        strategy = self.distribution()
        # Variables made in the strategy's scope are mirrored on every replica; the dtype policy wraps it.
        with runtime.precision_scope(self.precision), strategy_scope(strategy):
            self._build(len(data.classes))
        replicas = strategy.num_replicas_in_sync if strategy else 1
        self.distribution_ = {
            "strategy": type(strategy).__name__ if strategy else "none", "replicas": replicas,
            "devices": self.training_devices(), "per_device_batch_size": self.batch_size,
            "global_batch_size": self.batch_size * replicas,
        }
        train = self._train_dataset(data)
        val = self._dataset(data, "validation")
        # Weights are restored, the optimizer made and its state loaded inside the scope too, so they are mirrored.
        with checkpoint_directory(checkpoint_dir) as directory, strategy_scope(strategy):
            progress = ResumeState(directory)
            for name, start, end, rate in self.plan():
                self._restore(progress)
                self._set_phase(name)
                if name not in progress.finished:
                    self._compile(rate)
                    done = progress.epochs_done(name)
                    with warnings.catch_warnings():
                        # The pipeline drops unreadable files, so its length is unknown until an epoch ends.
                        warnings.filterwarnings("ignore", message="Your input ran out of data")
                        self.training_model_.fit(
                            train, validation_data=val, initial_epoch=start + done, epochs=end, verbose=verbose,
                            shuffle=False,  # the dataset reshuffles itself each epoch, from the seed
                            callbacks=[EpochCheckpoint(progress, name, self.model_), *callbacks],
                        )
                    progress.finish(name)
            self._restore(progress)
            self._record(progress)
        return self

    def _build(self, n_classes: int) -> None:
        """One set of layers, two graphs: the training model (augmentation in it on a GPU, base forced into
        inference mode) and `model_`, the inference model that gets exported."""
        self.base_ = copy_base(self.backbone.model)
        image = keras.Input((*self.backbone.image_size, 3), name="image")
        preprocess = preprocessing_layer(self.backbone.preprocessing)
        features = self.base_(preprocess(image), training=False)
        if self.pooling == "none":
            pool = keras.layers.Flatten(name="flatten")  # the book's Flatten over the feature maps
        else:
            pool = pooling_layer(self.pooling, features.ndim)
        head = [pool, *classifier_layers(n_classes, self.dense_units, self.dropout, self.seed)]
        outputs = apply_layers(head, features)
        self.model_ = keras.Model(image, class_probabilities(outputs) if n_classes == 2 else outputs, name="finetuned")
        self._forward = compiled_forward(self.model_)  # one traced graph, shared by all the splits predicted

        self.augmentation_ = augmentation(self.augment, self.seed)
        in_model = bool(runtime.gpus()) if self.augment_in_model is None else self.augment_in_model
        self.augment_in_model_ = in_model and self.augmentation_ is not None
        x = self.augmentation_(image) if self.augment_in_model_ else image
        training_outputs = apply_layers(head, InferenceMode(self.base_, name="base")(preprocess(x)))
        self.training_model_ = keras.Model(image, training_outputs, name="finetune_training")
        self.loss_ = loss_name(n_classes)
        self.trainable_params_ = {}

    def _train_dataset(self, data: ImageFolder) -> tf.data.Dataset:
        dataset = self._dataset(data, "train", shuffle=True)
        if self.augmentation_ is not None and not self.augment_in_model_:
            dataset = augment_dataset(dataset, self.augmentation_)
        return dataset

    def _dataset(self, data: ImageFolder, split: str, shuffle: bool = False) -> tf.data.Dataset:
        # Global batches: under MirroredStrategy Keras splits each one across the replicas.
        return labeled_images(data.files(split), data.splits[split].labels, self.backbone.image_size,
                              self.global_batch_size, shuffle=shuffle, seed=self.seed,
                              crop_to_aspect_ratio=self.crop_to_aspect_ratio)

    def _set_phase(self, phase: str) -> None:
        base = self.base_
        if phase == "frozen":
            base.trainable = False
        else:
            start = unfreeze_start(base, self.unfreeze)
            base.trainable = True
            for i, layer in enumerate(base_layers(base)):
                layer.trainable = i >= start
            # BatchNormalization stays frozen: updating its statistics on a small dataset wrecks what the
            # pretrained layers after it expect (Keras runs a non-trainable BN layer in inference mode).
            for layer in all_layers(base):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        self.trainable_params_[phase] = int(sum(np.prod(w.shape) for w in self.training_model_.trainable_weights))

    def _compile(self, learning_rate: float) -> None:
        optimizer = make_optimizer(self.optimizer, learning_rate)
        if self.distribution_["replicas"] > 1 and self.training_model_.dtype_policy.name == "mixed_float16":
            optimizer = ReplicaAgreedLossScale(optimizer)  # else compile wraps it in Keras' own loss scaling
        self.training_model_.compile(optimizer=optimizer, loss=self.loss_, metrics=["accuracy"])

    def _restore(self, progress: ResumeState) -> None:
        # The inference model holds every trained weight but no optimizer, so best weights load anywhere.
        if progress.best:
            self.model_.load_weights(progress.path(progress.best["weights"]))

    def _record(self, progress: ResumeState) -> None:
        self.history_ = progress.history()
        self.best_ = {k: progress.best[k] for k in ("phase", "epoch", "val_loss")} if progress.best else None
        self.phase_seconds_ = progress.phase_seconds()
        self.epochs_run_ = len(progress.epochs)

    def calibrate(self, data: ImageFolder) -> dict | None:
        """With calibration="temperature": temperature scaling (Guo et al. 2017) fitted on the validation
        split after training, folded into the output layer of `model_` (so the saved model is calibrated);
        returns what it did (T, validation ECE and log loss before and after). None otherwise."""
        if self.calibration != "temperature":
            return None
        output = self.model_.get_layer("predictions")
        hidden_model = compiled_forward(keras.Model(self.model_.input, output.input))
        hidden, labels = [], []
        for images, batch_labels in self._dataset(data, "validation"):
            hidden.append(hidden_model(images).numpy())
            labels.append(batch_labels.numpy())
        record = scale_output_temperature(output, np.concatenate(hidden), np.concatenate(labels),
                                          len(data.classes))
        return {**record, "fitted_on": "validation, after training"}

    # --- prediction -------------------------------------------------------------------------------------

    def predict_split(self, data: ImageFolder, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, class probabilities) for a split's readable images, in row order."""
        rows, proba = self._predict_rows(data, split)
        return np.asarray(data.splits[split].labels)[rows], proba

    def predictions(self, data: ImageFolder, split: str) -> SplitPredictions:
        """A split's readable images, in row order: relative paths, labels and class probabilities."""
        rows, proba = self._predict_rows(data, split)
        rows_of = data.splits[split]
        return SplitPredictions(tuple(rows_of.paths[i] for i in rows), np.asarray(rows_of.labels)[rows],
                                as_class_probs(proba))

    def _predict_rows(self, data: ImageFolder, split: str) -> tuple[np.ndarray, np.ndarray]:
        # Unreadable images are dropped by the pipeline: the row index says which images the rest are.
        images = indexed_images(data.files(split), self.backbone.image_size, self.crop_to_aspect_ratio)
        rows, proba = [], []
        for batch, batch_rows in batched(images, self.global_batch_size):
            proba.append(self._forward(batch).numpy())
            rows.append(batch_rows.numpy())
        if not rows:
            raise FeatpipeError(f"no readable images in the {split} split")
        return np.concatenate(rows), np.concatenate(proba)

    def evaluate(self, data: ImageFolder, split: str) -> dict:
        found = self.predictions(data, split)
        return classification_metrics(found.labels, found.proba, list(data.classes))


@functools.cache
def mirrored_strategy(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy per device set and process. Each new one numbers its all-reduces from the same
    start, and TensorFlow's process-wide collective state would then mix up those of two (a second fit in one
    process, as a comparison grid runs them, fails with a shape mismatch)."""
    return tf.distribute.MirroredStrategy(list(devices))


def strategy_scope(strategy: tf.distribute.Strategy | None):
    return strategy.scope() if strategy else contextlib.nullcontext()


def copy_base(model: keras.Model) -> keras.Model:
    """A copy of the base with its own weights: training the copy leaves the original untouched."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def base_layers(base: keras.Model) -> list[keras.Layer]:
    """The base's top-level layers, bottom to top (what --unfreeze-top counts)."""
    return [layer for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]


def unfreeze_start(base: keras.Model, spec: str) -> int:
    """Index into base_layers of the first layer phase 2 trains: ``top:N``, ``from:LAYER`` or ``all``."""
    layers = base_layers(base)
    kind, _, value = str(spec).partition(":")
    if kind == "all" and not value:
        return 0
    if kind == "top":
        try:
            n = int(value)
        except ValueError:
            raise FeatpipeError(f"bad unfreeze spec {spec!r}: expected top:N") from None
        if not 1 <= n <= len(layers):
            raise ArgumentError(f"{{unfreeze}} top:N must have N between 1 and {len(layers)} (the base's layers), "
                                f"got {n}", "unfreeze")
        return len(layers) - n
    if kind == "from":
        names = [layer.name for layer in layers]
        if value not in names:
            hint = difflib.get_close_matches(value, names, n=3)
            raise FeatpipeError(f"the base has no layer {value!r} for --unfreeze-from"
                                + (f"; did you mean {', '.join(hint)}?" if hint else ""))
        return names.index(value)
    raise FeatpipeError(f"bad unfreeze spec {spec!r}: expected top:N, from:LAYER or all")


def require_split(data: ImageFolder, split: str, hint: str) -> None:
    if split not in data.splits:
        raise FeatpipeError(f"dataset {data.root} has no {split}/ split; {hint}")
