"""The choices the command line and the library share, declared once.

Plain data and no TensorFlow import, so `featpipe --help` stays fast: the CLI builds its click.Choice
lists from here, and the library checks its arguments against the same tuples.
"""

from __future__ import annotations

SPLITS = ("train", "validation", "test")
POOLINGS = ("avg", "max", "none")
DTYPES = ("float32", "float16")  # storage dtype of cached features
COMPRESSIONS = ("none", "gzip", "lzf")
PRECISIONS = ("auto", "float32", "mixed")  # auto: mixed_float16 on a GPU, float32 on a CPU
WEIGHTS_CHOICES = ("default", "imagenet", "none")  # or a weights file

# Optimizer name -> its keras.optimizers class name.
OPTIMIZERS = {"rmsprop": "RMSprop", "adam": "Adam"}

# The recipe of Deep Learning with Python ch. 8 (see featpipe.augment for the spec language).
DEFAULT_AUGMENT = "flip,rotation=0.1,zoom=0.2"

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# Pixel preprocessing mode -> (bgr, scale, offset): an optional RGB->BGR flip, then x * scale + offset on 0-255
# pixels, per channel in the order the channels have after the flip (keras.applications' preprocess_input modes).
PREPROCESS_MODES = {
    "none": (False, (1.0,), (0.0,)),
    "rescale": (False, (1 / 255,), (0.0,)),
    "tf": (False, (1 / 127.5,), (-1.0,)),
    "caffe": (True, (1.0,), (-103.939, -116.779, -123.68)),
    "torch": (False, tuple(1 / (255 * s) for s in _IMAGENET_STD),
              tuple(-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD))),
}
