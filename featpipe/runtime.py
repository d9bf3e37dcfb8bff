"""Device and precision set-up, scoped: mixed precision and bigger batches on a GPU, float32 on a CPU.

Nothing here runs at import. `precision_scope` sets the Keras dtype policy for the models built inside
it and puts back the previous policy on exit, so one caller's precision never leaks into another's.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import numpy as np

from featpipe.choices import PRECISIONS
from featpipe.errors import ArgumentError, FeatpipeError


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def device_label() -> str:
    """The device this process computes on, as results record it: ``GPU x2 (/physical_device:GPU:0)`` or ``CPU``."""
    devices = gpus()
    return f"GPU x{len(devices)} ({devices[0].name})" if devices else "CPU"


def resolve_precision(precision: str = "auto", on_gpu: bool | None = None) -> str:
    """The one place `precision="auto"` is decided: "mixed" on a GPU, "float32" on a CPU.

    `on_gpu` is where the work runs (an engine's workers may run on other devices than this process);
    None means this process's devices.
    """
    if precision not in PRECISIONS:
        raise FeatpipeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "mixed" if (bool(gpus()) if on_gpu is None else on_gpu) else "float32"


def policy_name(precision: str = "auto") -> str:
    """The Keras dtype policy a precision choice means on this machine."""
    return "mixed_float16" if resolve_precision(precision) == "mixed" else "float32"


@contextlib.contextmanager
def precision_scope(precision: str = "auto") -> Iterator[dict]:
    """Build models inside this block with the policy `precision` names; yields what was chosen
    ({"device", "compute_dtype"}, recorded with results) and restores the previous policy on exit.

    On GPUs, memory growth keeps TensorFlow from claiming all memory up front (several jobs can share
    a node); `auto` turns on mixed_float16, which roughly doubles throughput on tensor-core GPUs.
    """
    import keras

    name = policy_name(precision)
    for gpu in gpus():
        _grow_memory(gpu)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield {
            "device": device_label(),
            "compute_dtype": keras.mixed_precision.dtype_policy().compute_dtype,
        }
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _grow_memory(gpu) -> None:
    import tensorflow as tf

    try:
        tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # already initialised by an earlier scope in this process: the setting stays
        pass


def hide_gpus() -> None:
    """Keep this process off the GPUs (its workers use them); must run before TensorFlow initialises them."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")


def default_batch_size() -> int:
    # A GPU needs big batches to stay busy; on a CPU bigger batches only add latency and memory.
    return 128 if gpus() else 32


def compute_dtype(precision: str = "auto") -> str:
    """The dtype layers compute in under `precision` on this machine (part of cache and run keys)."""
    return "float16" if policy_name(precision) == "mixed_float16" else "float32"


# One batch of decoded, resized float32 pixels is held several times at once (tf.data's prefetch, the batch the
# model is on, its first activations, which are bigger still): a batch over this share of the available memory
# cannot run; tf.data would block in its allocations instead of failing.
BATCH_MEMORY_SHARE = 1 / 4


def batch_bytes(image_size: tuple[int, int], batch_size: int) -> int:
    """Bytes of one batch of decoded pixels as the pipeline hands them to the base (RGB float32)."""
    height, width = image_size
    return batch_size * height * width * 3 * 4


def variable_bytes(variables) -> int:
    """Bytes of these variables' values (Keras or TensorFlow variables, or arrays)."""
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)


def check_batch_fits(image_size: tuple[int, int], batch_size: int, memory: int | None = None) -> None:
    """Refuse, in one line and before any work, an image size whose batches cannot fit in this node's memory
    (`memory` bytes; default: what is available now). Unknown memory: no check."""
    if memory is None:
        from featpipe.distribute import available_memory

        memory = available_memory()
    height, width = image_size
    need = batch_bytes(image_size, batch_size)
    if memory is not None and need > memory * BATCH_MEMORY_SHARE:
        raise ArgumentError(
            f"{{image_size}} {height}x{width} with {{batch_size}} {batch_size} needs {_gib(need)} for one batch of "
            f"pixels alone, and about 4 times that to run, with {_gib(memory)} of memory available: use a "
            "smaller {image_size} or {batch_size}", "image_size", "batch_size")


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"
