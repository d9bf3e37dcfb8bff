"""The end-to-end path: train a new head on a frozen base with augmentation, then fine-tune the base's top.

The recipe of Deep Learning with Python (ch. 8) and the TensorFlow transfer-learning tutorial:

1. "frozen": image -> augmentation -> the base's preprocessing -> frozen base (inference mode) -> pooling
   -> Dense(256, relu) -> Dropout(0.5) -> sigmoid unit (binary) or softmax; only the head trains.
2. "fine-tune": unfreeze the top of the base (BatchNormalization stays frozen and in inference mode),
   recompile with a low learning rate and continue the epoch count.

Each phase keeps the weights with the lowest validation loss seen so far (across phases) and restores them
at its end. Progress is committed after every epoch, so a killed run resumes from its last finished epoch.
This is the expensive path the feature cache avoids; `run_finetune` records it in the shared run format.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from featpipe import runs
from featpipe.augment import DEFAULT_AUGMENT, augment_dataset, augmentation, canonical_augment
from featpipe.backbones import Backbone, pooling_layer
from featpipe.data import ImageFolder
from featpipe.errors import FeatpipeError
from featpipe.heads.base import as_class_probs
from featpipe.heads.dense import class_probabilities
from featpipe.extract import POOLINGS, versions
from featpipe.metrics import classification_metrics
from featpipe.pipeline import labeled_images
from featpipe.preprocessing import Preprocessing

PHASES = ("frozen", "fine-tune")
OPTIMIZERS = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}
CHECKPOINT_DIR = "checkpoints"
PROGRESS_FILE = "progress.json"
MODEL_FILE = "model.keras"


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


class FineTuner:
    """Augmentation + frozen base + new head, then fine-tuning: scikit-learn habits, Keras underneath.

    `unfreeze` says what phase 2 trains in the base: ``top:N`` (its last N layers), ``from:LAYER``
    (that layer and all after it) or ``all``. `augment_in_model` None picks by device: inside the model on a
    GPU, in the tf.data pipeline on a CPU. After `fit`: `model_` (0-255 images -> class probabilities, no
    augmentation), `history_`, `best_` ({"phase", "epoch", "val_loss"}), `phase_seconds_`, `trainable_params_`.
    """

    def __init__(self, backbone: Backbone, *, augment: str | None = DEFAULT_AUGMENT, pooling: str = "avg",
                 epochs: int = 10, fine_tune_epochs: int = 10, batch_size: int = 32, learning_rate: float = 1e-3,
                 fine_tune_learning_rate: float = 1e-5, optimizer: str = "rmsprop", unfreeze: str = "top:4",
                 dense_units: int = 256, dropout: float = 0.5, crop_to_aspect_ratio: bool = False,
                 augment_in_model: bool | None = None, seed: int = 0):
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
        self.seed = seed

    def params(self) -> dict:
        """The hyperparameters (what run.json records and the run key covers)."""
        return {
            "augment": canonical_augment(self.augment), "pooling": self.pooling, "epochs": self.epochs,
            "fine_tune_epochs": self.fine_tune_epochs, "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "fine_tune_learning_rate": self.fine_tune_learning_rate,
            "optimizer": self.optimizer, "unfreeze": self.unfreeze, "dense_units": self.dense_units,
            "dropout": self.dropout, "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
        }

    # --- checks -----------------------------------------------------------------------------------------

    def check(self) -> None:
        """Reject bad options with one clear line, before any training starts."""
        for name in ("epochs", "fine_tune_epochs"):
            if getattr(self, name) < 0:
                raise FeatpipeError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.epochs == self.fine_tune_epochs == 0:
            raise FeatpipeError("--epochs and --fine-tune-epochs are both 0: nothing to train")
        if self.batch_size < 1:
            raise FeatpipeError(f"--batch-size must be positive, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise FeatpipeError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.pooling not in POOLINGS:
            raise FeatpipeError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            if not getattr(self, name) > 0:
                raise FeatpipeError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1 or self.dense_units < 1:
            raise FeatpipeError("dropout must be in [0, 1) and dense units positive")
        canonical_augment(self.augment)
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

        With `checkpoint_dir`, progress is committed there after every epoch and picked up again by a
        later fit with the same directory; `callbacks` are extra Keras callbacks for every phase.
        """
        self.check()
        data.require_classes("train")  # up front, not after an epoch
        _require_split(data, "validation", "carve one with --val-fraction")
        self._build(len(data.classes))
        train = self._train_dataset(data)
        val = self._dataset(data, "validation")
        with _directory(checkpoint_dir) as directory:
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
        keras.utils.set_random_seed(self.seed)
        base = self.backbone.model
        image = keras.Input((*self.backbone.image_size, 3), name="image")
        preprocess = Preprocessing.from_spec(self.backbone.preprocessing, name="preprocessing")
        features = base(preprocess(image), training=False)
        binary = n_classes == 2
        pool = keras.layers.Flatten(name="flatten") if self.pooling == "none" else pooling_layer(self.pooling, features.ndim)
        head = [
            pool,
            keras.layers.Dense(self.dense_units, activation="relu", name="dense"),
            keras.layers.Dropout(self.dropout, name="dropout"),
            # float32 output: softmax/sigmoid in float16 would lose precision under mixed precision.
            keras.layers.Dense(1 if binary else n_classes, activation="sigmoid" if binary else "softmax",
                               dtype="float32", name="predictions"),
        ]
        outputs = _apply(head, features)
        self.model_ = keras.Model(image, class_probabilities(outputs) if binary else outputs, name="finetuned")
        # One traced graph for every batch size, shared by all the splits predicted.
        self._forward = tf.function(lambda images: self.model_(images, training=False),
                                    input_signature=[tf.TensorSpec([None, *image.shape[1:]], tf.float32)])

        self.augmentation_ = augmentation(self.augment, self.seed)
        on_gpu = bool(tf.config.list_physical_devices("GPU"))
        in_model = on_gpu if self.augment_in_model is None else self.augment_in_model
        self.augment_in_model_ = in_model and self.augmentation_ is not None
        x = self.augmentation_(image) if self.augment_in_model_ else image
        training_outputs = _apply(head, InferenceMode(base, name="base")(preprocess(x)))
        self.training_model_ = keras.Model(image, training_outputs, name="finetune_training")
        self.loss_ = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
        self.trainable_params_ = {}

    def _train_dataset(self, data: ImageFolder) -> tf.data.Dataset:
        dataset = self._dataset(data, "train", shuffle=True)
        if self.augmentation_ is not None and not self.augment_in_model_:
            dataset = augment_dataset(dataset, self.augmentation_)
        return dataset

    def _dataset(self, data: ImageFolder, split: str, shuffle: bool = False) -> tf.data.Dataset:
        return labeled_images(data.files(split), data.splits[split].labels, self.backbone.image_size,
                              self.batch_size, shuffle=shuffle, seed=self.seed,
                              crop_to_aspect_ratio=self.crop_to_aspect_ratio)

    def _set_phase(self, phase: str) -> None:
        base = self.backbone.model
        if phase == "frozen":
            base.trainable = False
        else:
            layers = base_layers(base)
            start = unfreeze_start(base, self.unfreeze)
            base.trainable = True
            for i, layer in enumerate(layers):
                layer.trainable = i >= start
            # BatchNormalization stays frozen: updating its statistics on a small dataset wrecks what the
            # pretrained layers after it expect (Keras runs a non-trainable BN layer in inference mode).
            for layer in base._flatten_layers(include_self=False):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        self.trainable_params_[phase] = int(sum(np.prod(w.shape) for w in self.training_model_.trainable_weights))

    def _compile(self, learning_rate: float) -> None:
        self.training_model_.compile(optimizer=OPTIMIZERS[self.optimizer](learning_rate=learning_rate),
                                     loss=self.loss_, metrics=["accuracy"])

    def _restore(self, progress: "ResumeState") -> None:
        # The inference model holds every trained weight but no optimizer, so best weights load anywhere.
        if progress.best:
            self.model_.load_weights(progress.path(progress.best["weights"]))

    def _record(self, progress: "ResumeState") -> None:
        self.history_ = progress.history()
        self.best_ = {k: progress.best[k] for k in ("phase", "epoch", "val_loss")} if progress.best else None
        self.phase_seconds_ = progress.phase_seconds()
        self.epochs_run_ = len(progress.epochs)

    # --- prediction -------------------------------------------------------------------------------------

    def predict_split(self, data: ImageFolder, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, class probabilities) for a split's readable images, in row order."""
        labels, proba = [], []
        for images, batch_labels in self._dataset(data, split):
            proba.append(self._forward(images).numpy())
            labels.append(batch_labels.numpy())
        if not labels:
            raise FeatpipeError(f"no readable images in the {split} split")
        return np.concatenate(labels), np.concatenate(proba)

    def evaluate(self, data: ImageFolder, split: str) -> dict:
        labels, proba = self.predict_split(data, split)
        return classification_metrics(labels, as_class_probs(proba), list(data.classes))


def _apply(layers: list[keras.Layer], x):
    for layer in layers:
        x = layer(x)
    return x


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
            raise FeatpipeError(f"--unfreeze-top must be between 1 and {len(layers)} (the base's layers), got {n}")
        return len(layers) - n
    if kind == "from":
        names = [layer.name for layer in layers]
        if value not in names:
            hint = difflib.get_close_matches(value, names, n=3)
            raise FeatpipeError(f"the base has no layer {value!r} for --unfreeze-from"
                                + (f"; did you mean {', '.join(hint)}?" if hint else ""))
        return names.index(value)
    raise FeatpipeError(f"bad unfreeze spec {spec!r}: expected top:N, from:LAYER or all")


def _require_split(data: ImageFolder, split: str, hint: str) -> None:
    if split not in data.splits:
        raise FeatpipeError(f"dataset {data.root} has no {split}/ split; {hint}")


@contextlib.contextmanager
def _directory(path):
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="featpipe-finetune-") as tmp:
        yield Path(tmp)


# --- progress: what makes a killed run resumable ---------------------------------------------------------


def _read_progress(directory: Path) -> dict:
    """The committed progress, or {} (start over, with a warning) when it is damaged or points at a weights file
    that is gone: a work file read back is checked, never trusted into a crash."""
    try:
        state = runs.read_json_object(directory / PROGRESS_FILE)
        files = [(state.get("best") or {}).get("weights"), state.get("last")]
        if not isinstance(state.get("epochs", []), list) or not isinstance(state.get("finished", []), list):
            raise FeatpipeError(f"{directory / PROGRESS_FILE} has the wrong shape")
        gone = [name for name in files if name is not None and not (directory / str(name)).is_file()]
        if gone:
            raise FeatpipeError(f"{directory / PROGRESS_FILE} points at missing {', '.join(map(str, gone))}")
    except (FeatpipeError, AttributeError) as e:
        warnings.warn(f"discarding the fine-tuning checkpoint, starting over: {e}", stacklevel=3)
        return {}
    return state


class ResumeState:
    """Epoch records, the best weights so far and the last epoch's training state, committed as one JSON file.

    Weight files are named by epoch and only the committed JSON points at them, so a run killed while
    writing resumes from a consistent epoch; files nothing points at are deleted.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        state = _read_progress(directory) if self.path(PROGRESS_FILE).is_file() else {}
        self.epochs: list[dict] = state.get("epochs", [])
        self.finished: list[str] = state.get("finished", [])
        self.best: dict | None = state.get("best")
        self.last: str | None = state.get("last")

    def path(self, name: str) -> Path:
        return self.directory / name

    def epochs_done(self, phase: str) -> int:
        return sum(record["phase"] == phase for record in self.epochs)

    def record(self, phase: str, epoch: int, logs: dict, seconds: float, training_model, inference_model) -> None:
        record = {"phase": phase, "epoch": epoch, "seconds": seconds, **{k: float(v) for k, v in logs.items()}}
        val_loss = record.get("val_loss", math.nan)
        if math.isfinite(val_loss) and (self.best is None or val_loss < self.best["val_loss"]):
            name = f"best-{epoch}.weights.h5"
            runs.save_weights(inference_model, self.path(name))
            self.best = {"phase": phase, "epoch": epoch, "val_loss": val_loss, "weights": name}
        self.last = f"last-{epoch}.weights.h5"
        runs.save_weights(training_model, self.path(self.last))
        self.epochs.append(record)
        self._commit()

    def finish(self, phase: str) -> None:
        self.finished.append(phase)
        self.last = None
        self._commit()

    def _commit(self) -> None:
        runs.write_json(self.path(PROGRESS_FILE), {"epochs": self.epochs, "finished": self.finished,
                                                   "best": self.best, "last": self.last})
        keep = {PROGRESS_FILE, self.last, self.best and self.best["weights"]}
        for file in self.directory.glob("*.weights.h5"):
            if file.name not in keep:
                file.unlink()

    def history(self) -> dict:
        """Keras-style lists over both phases plus where each phase starts."""
        keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if any(k in r for r in self.epochs)]
        history = {k: [r.get(k) for r in self.epochs] for k in keys}
        starts = {}
        for i, record in enumerate(self.epochs):
            starts.setdefault(record["phase"], i)
        history["phases"] = [{"name": name, "start_epoch": start} for name, start in starts.items()]
        return history

    def phase_seconds(self) -> dict:
        seconds: dict[str, float] = {}
        for record in self.epochs:
            seconds[record["phase"]] = seconds.get(record["phase"], 0.0) + record["seconds"]
        return seconds


class EpochCheckpoint(keras.callbacks.Callback):
    """Commits each finished epoch to `progress`; at the start of a phase, resumes from its last epoch."""

    def __init__(self, progress: ResumeState, phase: str, inference_model: keras.Model):
        super().__init__()
        self.progress, self.phase, self.inference_model = progress, phase, inference_model
        self.clock = time.perf_counter()

    def on_train_begin(self, logs=None):
        if self.progress.last:
            if not self.model.optimizer.built:  # its state is in the file too; it must exist to be loaded
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(self.progress.path(self.progress.last))

    def on_epoch_begin(self, epoch, logs=None):
        self.clock = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.progress.record(self.phase, epoch, logs or {}, time.perf_counter() - self.clock,
                             self.model, self.inference_model)


# --- run directories -------------------------------------------------------------------------------------


@dataclass
class FinetuneRun:
    """A finished end-to-end run (made now or found complete)."""

    run_dir: Path
    reused: bool
    run: dict
    metrics: dict

    def summary(self) -> dict:
        return {
            "head": "finetune", "run_dir": str(self.run_dir), "name": self.run["name"], "reused": self.reused,
            "val_accuracy": self.metrics["validation"]["accuracy"], "test_accuracy": self.metrics["test"]["accuracy"],
            "seconds": round(self.metrics["timing"]["total_seconds"], 3),
        }


def run_key(data: ImageFolder, tuner: FineTuner) -> str:
    """What makes two runs the same: base, input size, dataset, hyperparameters, seed and precision."""
    facts = {
        "backbone": tuner.backbone.identity(), "image_size": list(tuner.backbone.image_size),
        "dataset": data.fingerprint(), "classes": list(data.classes), "params": tuner.params(),
        "seed": tuner.seed, "compute_dtype": keras.mixed_precision.global_policy().compute_dtype,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def run_name(data: ImageFolder, tuner: FineTuner) -> str:
    return f"finetune-{tuner.backbone.label}-{tuner.backbone.image_size[0]}-{run_key(data, tuner)[:10]}"


def run_finetune(data: ImageFolder, tuner: FineTuner, runs_dir: str | os.PathLike = "runs", *, force: bool = False,
                 callbacks=(), device: str = "", verbose: int | str = 0) -> FinetuneRun:
    """Fine-tune into runs_dir/<run name>: resume an unfinished run, reuse a finished one unless `force`."""
    tuner.check()
    data.require_classes("train")
    _require_split(data, "validation", "carve one with --val-fraction")
    _require_split(data, "test", "the run reports test metrics")
    run_dir = Path(runs_dir) / run_name(data, tuner)
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if runs.is_complete(run_dir):
        loaded = runs.load_run(run_dir)
        runs.verified_model_file(run_dir, loaded["run"])  # reuse only a model featpipe can show it wrote
        return FinetuneRun(run_dir, True, loaded["run"], loaded["metrics"])
    clock = time.perf_counter()
    tuner.fit(data, run_dir / CHECKPOINT_DIR, callbacks=callbacks, verbose=verbose)
    fitted = time.perf_counter()
    metrics = {"validation": tuner.evaluate(data, "validation"), "test": tuner.evaluate(data, "test")}
    predict_seconds = time.perf_counter() - fitted
    digests = runs.save_model_files(run_dir, lambda folder: tuner.model_.save(folder / MODEL_FILE))
    metrics["selection"] = None if tuner.best_ is None else {
        "metric": "val_loss", "best_params": {"phase": tuner.best_["phase"], "epoch": tuner.best_["epoch"] + 1},
        "score": tuner.best_["val_loss"],
    }
    metrics["timing"] = _timing(tuner, len(data.splits["train"]), predict_seconds,
                                setup_seconds=fitted - clock - sum(tuner.phase_seconds_.values()))
    info = _run_info(data, tuner, run_dir.name, device)
    runs.finish_run(run_dir, info, metrics, tuner.history_, digests)
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    return FinetuneRun(run_dir, False, info, metrics)


def _timing(tuner: FineTuner, n_train: int, predict_seconds: float, setup_seconds: float) -> dict:
    """Fit time sums the epochs of every attempt (a resumed run counts the epochs done before too)."""
    fit_seconds = sum(tuner.phase_seconds_.values())
    return {
        "extract_seconds": 0.0, "extract_images_per_second": None, "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds, "total_seconds": fit_seconds + predict_seconds + max(setup_seconds, 0.0),
        "phase_seconds": tuner.phase_seconds_,
        # Counts the train split's files each epoch (unreadable ones are few and dropped by the pipeline).
        "images_per_second": n_train * tuner.epochs_run_ / fit_seconds if fit_seconds else None,
    }


def _run_info(data: ImageFolder, tuner: FineTuner, name: str, device: str) -> dict:
    backbone = tuner.backbone
    return {
        "name": name, "kind": "finetune", "path": "end-to-end", "head": "finetune",
        "backbone": backbone.spec, "weights": backbone.weights, "pretrained": backbone.pretrained,
        "image_size": list(backbone.image_size), "pooling": tuner.pooling,
        "crop_to_aspect_ratio": tuner.crop_to_aspect_ratio, "preprocessing": backbone.preprocessing,
        "cache": None,
        "dataset": {"root": str(data.root.resolve()), "fingerprint": data.fingerprint(), "classes": list(data.classes),
                    "val_fraction": data.val_fraction},
        "params": tuner.params(), "seed": tuner.seed, "versions": versions(),
        "trainable_params": tuner.trainable_params_, "augment_in_model": tuner.augment_in_model_,
        "device": device or ("GPU" if tf.config.list_physical_devices("GPU") else "CPU"),
        "compute_dtype": keras.mixed_precision.global_policy().compute_dtype,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_file": MODEL_FILE,
    }
