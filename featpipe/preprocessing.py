"""The pixel preprocessing a pretrained base was trained with, as one small serialisable Keras layer.

Every known scheme is an optional RGB->BGR flip followed by a per-channel affine map ``x * scale + offset``
on 0-255 pixels: keras.applications' ``caffe`` / ``tf`` / ``torch`` modes and keras-hub's ImageConverter
(scale, offset) alike. Keeping it a layer lets an exported model carry its own preprocessing.
"""

from __future__ import annotations

import keras
import numpy as np

from featpipe.errors import FeatpipeError

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
_IMAGENET_STD = np.array([0.229, 0.224, 0.225])

# mode -> (bgr, scale, offset), in the order the channels have after the optional flip.
MODES = {
    "none": (False, [1.0], [0.0]),
    "rescale": (False, [1 / 255], [0.0]),
    "tf": (False, [1 / 127.5], [-1.0]),
    "caffe": (True, [1.0], [-103.939, -116.779, -123.68]),
    "torch": (False, list(1 / (255 * _IMAGENET_STD)), list(-_IMAGENET_MEAN / _IMAGENET_STD)),
}


def preprocessing_config(mode: str, scale=None, offset=None) -> dict:
    """The plain-data description of a preprocessing (what the cache key and run files record)."""
    if mode == "scale_offset":
        return {"mode": mode, "bgr": False, "scale": _as_list(scale), "offset": _as_list(offset)}
    if mode not in MODES:
        raise FeatpipeError(f"unknown preprocessing {mode!r}; choose one of {', '.join(sorted(MODES))}")
    bgr, scale, offset = MODES[mode]
    return {"mode": mode, "bgr": bgr, "scale": [float(s) for s in scale], "offset": [float(o) for o in offset]}


def _as_list(value) -> list[float]:
    return [float(v) for v in np.ravel(value)]


@keras.saving.register_keras_serializable(package="featpipe")
class Preprocessing(keras.layers.Layer):
    """0-255 RGB images -> the input a base expects: optional BGR flip, then ``x * scale + offset``."""

    def __init__(self, mode="none", bgr=False, scale=(1.0,), offset=(0.0,), **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.bgr = bool(bgr)
        self.scale = [float(s) for s in scale]
        self.offset = [float(o) for o in offset]

    @classmethod
    def from_spec(cls, config: dict, **kwargs) -> "Preprocessing":
        return cls(config["mode"], config["bgr"], config["scale"], config["offset"], **kwargs)

    def call(self, images):
        x = keras.ops.cast(images, self.compute_dtype)
        if self.bgr:
            x = keras.ops.flip(x, axis=-1)
        scale = keras.ops.cast(np.array(self.scale), self.compute_dtype)
        offset = keras.ops.cast(np.array(self.offset), self.compute_dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "bgr": self.bgr, "scale": self.scale, "offset": self.offset}
