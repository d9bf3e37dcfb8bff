"""Classify image files with a finished run, and export a run as one servable Keras model.

Both kinds of run work: cached-feature heads (the backbone and preprocessing recorded in run.json are
rebuilt and checked against the recorded weights, then the head is applied to their features) and
end-to-end fine-tuned models (one Keras model, 0-255 RGB image in, class probabilities out).
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from featpipe import atomic
from featpipe.backbones import Backbone, load_backbone
from featpipe.csvfile import STDOUT, write_csv
from featpipe.data import folder_error, is_image_file
from featpipe.errors import FeatpipeError
from featpipe.heads import load_head
from featpipe.heads.base import as_class_probs
from featpipe.model_parts import class_probabilities, compiled_forward, inference_forward
from featpipe.pipeline import batched, indexed_images, unreadable_reason
from featpipe.runs import RUN_FILE, load_run, verified_model_file

# Largest difference allowed between an exported model and the pipeline it was built from.
EXPORT_TOLERANCE = 1e-5


@dataclass
class ImageClassifier:
    """A run, ready to classify: batches of 0-255 RGB images at `image_size` -> (n, classes) probabilities."""

    classes: list[str]
    image_size: tuple[int, int]
    crop_to_aspect_ratio: bool
    probabilities: Callable


@dataclass
class PredictResult:
    output: Path
    rows: int
    errors: int

    def summary(self) -> dict:
        return {"output": str(self.output), "rows": self.rows, "errors": self.errors}


def load_recorded_backbone(info: dict) -> Backbone:
    """The backbone a run's features came from, refusing one whose weights are not the recorded ones."""
    weights = "default" if info["weights"] == "file" else info["weights"]  # "file": the model file's own weights
    seed = re.fullmatch(r"random\(seed=(-?\d+)\)", info["weights_id"])
    backbone = load_backbone(info["backbone"], weights, tuple(info["image_size"]), seed=int(seed[1]) if seed else 0)
    backbone.preprocessing = info["preprocessing"]
    found = backbone.identity()["weights_id"]
    if found != info["weights_id"]:
        raise FeatpipeError(
            f"backbone {info['backbone']} now loads weights {found}, not the {info['weights_id']} its cached "
            "features were extracted with; restore the original weights (or re-extract and retrain)"
        )
    return backbone


def image_model(run_dir: str | os.PathLike, info: dict) -> keras.Model:
    """A head run as one model of built-in layers: 0-255 image -> preprocessing -> frozen base -> pooling ->
    head -> probabilities. A dense head's saved Keras model is called as it is; any other head is rebuilt as
    layers (`featpipe.heads.keras_graph`)."""
    model_file = verified_model_file(run_dir, info)
    features = load_recorded_backbone(info).feature_model(info["pooling"])
    if info["head"] == "dense":
        outputs = keras.saving.load_model(model_file)(features.output)
        if outputs.shape[-1] == 1:
            outputs = class_probabilities(outputs)
    else:
        from featpipe.heads.keras_graph import head_probabilities

        outputs = head_probabilities(load_head(run_dir), features.output)
    return keras.Model(features.input, outputs, name=f"{info['name']}_classifier")


def run_model_info(run_dir: str | os.PathLike) -> dict:
    """A finished run's run.json, checked (RunRecord.from_json, and a cached head's weights_id) for what
    loading its model needs: a one-line error, not a KeyError."""
    loaded = load_run(run_dir)
    if loaded["record"].kind == "head" and not isinstance(loaded["record"].details.get("weights_id"), str):
        raise FeatpipeError(f"{Path(run_dir) / RUN_FILE} is damaged: missing or bad weights_id")
    return loaded["run"]


def load_classifier(run_dir: str | os.PathLike) -> ImageClassifier:
    """The run's model, loaded only after its files match the digests featpipe recorded when writing them."""
    info = run_model_info(run_dir)
    model_file = verified_model_file(run_dir, info)
    with _load_errors(model_file):
        if info["kind"] == "finetune":
            probabilities = _keras_probabilities(keras.saving.load_model(model_file))
        elif info["head"] == "dense":
            probabilities = _keras_probabilities(image_model(run_dir, info))
        else:
            features = load_recorded_backbone(info).feature_model(info["pooling"])
            probabilities = _head_probabilities(features, load_head(run_dir))
    return ImageClassifier(list(info["dataset"]["classes"]), tuple(info["image_size"]),
                           bool(info.get("crop_to_aspect_ratio", False)), probabilities)


@contextlib.contextmanager
def _load_errors(path: Path):
    """A verified model file that still fails to load (say, a library too old to read it): one line."""
    try:
        yield
    except FeatpipeError:
        raise
    except (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise FeatpipeError(f"cannot load model file {path}: {type(e).__name__}: {first}") from None


def _keras_probabilities(model: keras.Model) -> Callable:
    forward = compiled_forward(model)
    return lambda images: as_class_probs(forward(images).numpy())


def _head_probabilities(feature_model: keras.Model, head) -> Callable:
    forward = inference_forward(feature_model)  # the features as extraction computes them
    return lambda images: head.predict_proba(forward(images).numpy())


def image_files(inputs: list[str | os.PathLike]) -> list[str]:
    """Files named explicitly (whatever their extension) plus the image files found under folders, in order.

    Special files and broken links are kept: reading skips them and their CSV row says why."""
    files: list[str] = []
    for item in map(str, inputs):
        if os.path.isdir(item):
            for dirpath, dirnames, names in os.walk(item, onerror=folder_error):
                dirnames.sort()
                files += [os.path.join(dirpath, name) for name in sorted(names) if is_image_file(name)]
        elif os.path.lexists(item):
            files.append(item)
        else:
            raise FeatpipeError(f"no such file or folder: {item}")
    if not files:
        raise FeatpipeError(f"no image files in {', '.join(map(str, inputs))}")
    return files


def predict(run_dir: str | os.PathLike, inputs: list[str | os.PathLike], output: str | os.PathLike = "predictions.csv",
            batch_size: int = 32) -> PredictResult:
    """One CSV row per image: path, predicted class, a probability per class; unreadable files get an error row.
    `output` "-" is standard output."""
    if os.fspath(output) != STDOUT:
        atomic.check_writable(output)  # before any work: the previous file stays until the new one is complete
    files = image_files(inputs)
    classifier = load_classifier(run_dir)
    classes = classifier.classes
    found: dict[int, np.ndarray] = {}
    images = indexed_images(files, classifier.image_size, classifier.crop_to_aspect_ratio)
    for batch, rows in batched(images, batch_size):
        probabilities = classifier.probabilities(batch)
        if probabilities.shape[1] != len(classes):
            raise FeatpipeError(f"the model of {run_dir} gives {probabilities.shape[1]} outputs for {len(classes)} classes")
        found.update(zip(rows.numpy().tolist(), probabilities))
    output = Path(output)
    header = ["path", "predicted_class", *(f"prob_{name}" for name in classes), "error"]
    write_csv(output, header, (
        [path, classes[int(found[row].argmax())], *map(float, found[row]), ""] if row in found
        else [path, "", *[""] * len(classes), unreadable_reason(path, size=classifier.image_size)]
        for row, path in enumerate(files)
    ))
    return PredictResult(output, len(files), len(files) - len(found))


def export(run_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write one Keras model of built-in layers, 0-255 RGB image in -> class probabilities out, for any head's
    run or a finetune run; it is written only after it computes what `predict` computes, to EXPORT_TOLERANCE."""
    output = Path(output)
    if output.suffix != ".keras":
        raise FeatpipeError(f"the exported model's file name must end in .keras, got {output}")
    atomic.check_writable(output)
    info = run_model_info(run_dir)
    model_file = verified_model_file(run_dir, info)
    if info["kind"] == "finetune":
        atomic.copy_file(model_file, output)
        return output
    with _load_errors(model_file):
        model = image_model(run_dir, info)
        classifier = load_classifier(run_dir)
    with atomic.atomic_path(output) as tmp:
        model.save(tmp)
        _check_export(classifier, tmp)
    return output


# Images the export is checked on: random pixels, plus one flat grey image.
CHECK_IMAGES = 8


def _check_export(classifier: ImageClassifier, path: Path) -> None:
    """The saved file, loaded back, must compute what predict computes for the same input tensor."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (CHECK_IMAGES, *classifier.image_size, 3)).astype(np.float32)
    images[-1] = 128.0
    saved = keras.saving.load_model(path)
    difference = np.abs(as_class_probs(keras.ops.convert_to_numpy(saved(images))) - classifier.probabilities(images))
    if difference.max() > EXPORT_TOLERANCE:
        raise FeatpipeError(f"the exported model's probabilities differ from predict's by {difference.max():.2g} "
                            f"(over {EXPORT_TOLERANCE:g}); not written")
