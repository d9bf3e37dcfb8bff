"""Device and precision set-up: mixed precision and bigger batches on a GPU, float32 on a CPU."""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter before it is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from featpipe.errors import FeatpipeError  # noqa: E402

PRECISIONS = ("auto", "float32", "mixed")


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def configure(precision: str = "auto") -> dict:
    """Set the Keras dtype policy before models are built; returns what was chosen (recorded with results).

    On GPUs, memory growth keeps TensorFlow from claiming all memory up front (several jobs can share a
    node); `auto` turns on mixed_float16, which roughly doubles throughput on tensor-core GPUs.
    """
    if precision not in PRECISIONS:
        raise FeatpipeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    devices = gpus()
    for gpu in devices:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by an earlier call in this process
            pass
    mixed = precision == "mixed" or (precision == "auto" and bool(devices))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return {
        "device": f"GPU x{len(devices)} ({devices[0].name})" if devices else "CPU",
        "compute_dtype": "float16" if mixed else "float32",
    }


def hide_gpus() -> None:
    """Keep this process off the GPUs (its workers use them); must run before TensorFlow initialises them."""
    tf.config.set_visible_devices([], "GPU")


def default_batch_size() -> int:
    # A GPU needs big batches to stay busy; on a CPU bigger batches only add latency and memory.
    return 128 if gpus() else 32
