"""The pixel preprocessing a pretrained base was trained with, as one built-in Keras layer.

Every known scheme is an optional RGB->BGR flip followed by a per-channel affine map ``x * scale + offset``
on 0-255 pixels: keras.applications' ``caffe`` / ``tf`` / ``torch`` modes and keras-hub's ImageConverter
(scale, offset) alike. Both fit in one frozen Dense layer over the channel axis (a permutation matrix
times the scales, plus the offsets), so a saved model that carries its preprocessing loads with plain
Keras, without featpipe.
"""

from __future__ import annotations

import keras
import numpy as np

from featpipe.choices import PREPROCESS_MODES
from featpipe.errors import FeatpipeError


def preprocessing_config(mode: str, scale=None, offset=None) -> dict:
    """The plain-data description of a preprocessing (what the cache key and run files record)."""
    if mode == "scale_offset":
        return {"mode": mode, "bgr": False, "scale": _as_list(scale), "offset": _as_list(offset)}
    if mode not in PREPROCESS_MODES:
        raise FeatpipeError(f"unknown preprocessing {mode!r}; choose one of {', '.join(sorted(PREPROCESS_MODES))}")
    bgr, scale, offset = PREPROCESS_MODES[mode]
    return {"mode": mode, "bgr": bgr, "scale": [float(s) for s in scale], "offset": [float(o) for o in offset]}


def _as_list(value) -> list[float]:
    return [float(v) for v in np.ravel(value)]


def preprocessing_layer(config: dict, name: str = "preprocessing") -> keras.layers.Dense:
    """0-255 RGB images -> the input a base expects, as a frozen Dense(3) applied to every pixel's channels."""
    scale = np.broadcast_to(np.asarray(config["scale"], np.float32), (3,))
    offset = np.broadcast_to(np.asarray(config["offset"], np.float32), (3,))
    source = [2, 1, 0] if config["bgr"] else [0, 1, 2]  # the input channel each output channel reads
    kernel = np.zeros((3, 3), np.float32)
    kernel[source, [0, 1, 2]] = scale
    layer = keras.layers.Dense(3, trainable=False, name=name)
    layer.build((None, 3))
    layer.set_weights([kernel, offset])
    return layer
