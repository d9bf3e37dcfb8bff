"""Helpers for the heads tests: synthetic separable features, cache files written from arrays, and a tiny
real extraction (generated images + a tiny saved Keras base)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cache_fixtures import write_cache as write_cache_file
from featpipe.provenance import key_digest

SPLIT_ROWS = {"train": 60, "validation": 30, "test": 30}


def blobs(rows: int, dim: int = 12, n_classes: int = 2, seed: int = 0, spatial: bool = False, spread: float = 1.0):
    """Gaussian clouds around well separated class centres: (features, labels); labels cycle 0..k-1.

    With `spatial`, every sample is a 3x3 map whose cells are independent draws around its centre.
    """
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(0, 3, (n_classes, dim))
    labels = np.arange(rows) % n_classes
    shape = (rows, 3, 3, dim) if spatial else (rows, dim)
    noise = rng.normal(0, spread, shape)
    offset = centres[labels][:, None, None, :] if spatial else centres[labels]
    return (offset + noise).astype(np.float32), labels


def splits(n_classes: int = 2, dim: int = 12, spatial: bool = False, rows=SPLIT_ROWS, spread: float = 1.0):
    """{split: (features, labels)} drawn from the same clouds with a different seed per split."""
    return {name: blobs(n, dim, n_classes, seed, spatial, spread) for seed, (name, n) in enumerate(rows.items())}


def write_cache(path: Path, data: dict, classes: list[str], seconds: float = 2.0) -> Path:
    """A real, finished cache file holding `data` ({split: (features, labels)}), as extract writes it."""
    facts = {"backbone": {"spec": "synthetic", "kind": "file", "weights": "none", "weights_id": "none",
                          "preprocessing": {"mode": "none"}},
             "crop_to_aspect_ratio": False, "pooling": "avg", "splits": {s: len(y) for s, (_, y) in data.items()}}
    key = key_digest(facts)
    attrs = {
        "facts": facts, "classes": classes, "backbone": "synthetic", "weights": "none", "pretrained": False,
        "image_size": [32, 32], "pooling": "avg",
        "dataset": {"root": str(path.parent / "no-such-dataset"), "val_fraction": None, "seed": 0,
                    "content_hash": False, "fingerprint": "synthetic"},
        "versions": {"featpipe": "test"}, "device": "CPU", "created": "2024-01-01T00:00:00+00:00",
    }
    return write_cache_file(path, key, data, attrs, seconds=seconds)


def synthetic_cache(directory: Path, n_classes: int = 2, spatial: bool = False, without=()) -> Path:
    data = {k: v for k, v in splits(n_classes, spatial=spatial).items() if k not in without}
    return write_cache(directory / "synthetic-0123456789abcdef.h5", data, ["cat", "dog", "fox"][:n_classes])


def real_cache(root: Path, model_file: str, classes=("cat", "dog"), pooling: str = "avg", corrupt: bool = False) -> Path:
    """Generated images -> a tiny saved base (its own weights) -> a finished cache file; returns its path."""
    from conftest import make_dataset
    from featpipe.backbones import load_backbone
    from featpipe.data import load_image_folder
    from featpipe.extraction import extract

    data = make_dataset(root / "data", classes=classes, per_split={"train": 8, "validation": 4, "test": 4},
                        corrupt=corrupt)
    result = extract(load_image_folder(data), load_backbone(model_file), root / "cache", pooling=pooling,
                     batch_size=8, progress=False)
    return result.path


def validation(data: dict) -> dict:
    """The keyword arguments that hand a head its validation split: ``head.fit(X, y, **validation(data))``."""
    X_val, y_val = data["validation"]
    return {"X_val": X_val, "y_val": y_val}
