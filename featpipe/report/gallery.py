"""What a run gets wrong: its most confident test mistakes, with thumbnails read from the dataset.

The images are untrusted input read from the dataset root run.json records: each is read through featpipe's
checked reader (a regular file, a header claiming at most the pixel cap; `featpipe.pipeline.read_image`), only
under that root (a relative path without ".."), decoded by PIL at reduced scale where the format allows, and
shrunk to a small JPEG embedded in the page. An image that is gone or unusable is listed without a thumbnail,
with the reason; the report never fails over one.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from featpipe.data import UnusableFile

THUMBNAIL_PX = 112
BEST_RUN_MISTAKES = 24  # thumbnails in the best run's gallery
RUN_MISTAKES = 12  # in each run's details


@dataclass(frozen=True)
class Mistake:
    path: str  # relative to the dataset root
    true: str
    predicted: str
    confidence: float  # probability of the predicted class
    true_probability: float
    thumbnail: str | None  # a data: URI, or None with `missing` saying why
    missing: str | None = None


@dataclass(frozen=True)
class Gallery:
    label: str
    mistakes: list[Mistake]
    n_mistakes: int
    n_test: int
    note: str | None = None  # why there are no thumbnails (images gone), or no gallery at all


def mistakes_gallery(run: dict, limit: int) -> Gallery:
    """The run's test mistakes, most confident first, at most `limit` with thumbnails."""
    label = run["row"]["label"]
    test = (run.get("predictions") or {}).get("test")
    if test is None:
        return Gallery(label, [], 0, 0, note=f"{run.get('predictions_problem') or 'no per-image predictions'}: "
                       "no gallery of mistakes for this run")
    info = run["run"]
    classes = (info.get("dataset") or {}).get("classes") or []
    proba = np.asarray(test.proba, dtype=float)
    labels = np.asarray(test.labels)
    predicted = proba.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = proba[np.arange(len(proba)), predicted]
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    root = (info.get("dataset") or {}).get("root")
    root_ok = isinstance(root, str) and Path(root).is_dir()
    mistakes = []
    for i in order.tolist():
        thumbnail, missing = (thumbnail_uri(root, test.paths[i]) if root_ok
                              else (None, "dataset folder not found"))
        mistakes.append(Mistake(
            path=test.paths[i], true=_class(classes, labels[i]), predicted=_class(classes, predicted[i]),
            confidence=float(confidence[i]), true_probability=float(proba[i, labels[i]]),
            thumbnail=thumbnail, missing=missing))
    note = None
    if not root_ok and len(order):
        note = f"the dataset folder {root} is not on this machine any more: mistakes listed without thumbnails"
    elif mistakes and all(m.thumbnail is None for m in mistakes):
        note = "none of these images could be read any more: mistakes listed without thumbnails"
    return Gallery(label, mistakes, int(len(wrong)), int(len(labels)), note)


def _class(classes: list, index) -> str:
    index = int(index)
    return str(classes[index]) if 0 <= index < len(classes) else str(index)


def thumbnail_uri(root: str, relative: str) -> tuple[str | None, str | None]:
    """(data URI of a small JPEG, None) or (None, why not) for root/relative."""
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None, "path outside the dataset folder"
    from featpipe.pipeline import max_pixels, read_image  # TensorFlow loads only when a gallery is drawn

    try:
        data = read_image(str(Path(root, *rel.parts)), max_pixels())
    except UnusableFile as e:
        return None, e.reason
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # its size was checked by read_image
                image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG: decode at 1/2..1/8 scale
                image = image.convert("RGB")
                image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
                out = io.BytesIO()
                image.save(out, format="JPEG", quality=80)
    except Exception as e:  # noqa: BLE001  any PIL failure on a hostile file is a reason, not a crash
        return None, f"cannot decode ({type(e).__name__})"
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii"), None
