"""featpipe.runtime: nothing set at import; precision scoped to a block and restored after it."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from featpipe.errors import FeatpipeError
from featpipe.runtime import compute_dtype, policy_name, precision_scope, variable_bytes


@pytest.mark.slow
def test_importing_featpipe_sets_no_environment_variable():
    script = ("import os; before = dict(os.environ); import featpipe.runtime, featpipe.finetune; "
              "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_scope_sets_the_policy_and_restores_the_previous_one():
    assert keras.mixed_precision.dtype_policy().name == "float32"
    with precision_scope("mixed") as setup:
        assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
        assert setup == {"device": "CPU", "compute_dtype": "float16"}
        assert keras.layers.Dense(2).compute_dtype == "float16"
        with precision_scope("float32"):
            assert keras.mixed_precision.dtype_policy().name == "float32"
        assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_the_policy_is_restored_when_the_block_fails():
    with pytest.raises(RuntimeError), precision_scope("mixed"):
        raise RuntimeError("training died")
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_auto_is_float32_on_a_cpu_and_bad_choices_are_refused():
    assert policy_name("auto") == "float32" and compute_dtype("auto") == "float32"  # the test machine has no GPU
    assert compute_dtype("mixed") == "float16"
    with pytest.raises(FeatpipeError, match="precision must be one of auto, float32, mixed, got 'half'"):
        with precision_scope("half"):
            pass
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_a_batch_that_cannot_fit_in_memory_is_refused():
    from featpipe.errors import ArgumentError
    from featpipe.runtime import check_batch_fits

    check_batch_fits((224, 224), 32, memory=2 * 2**30)  # 19 MB of pixels: fine on 2 GiB
    with pytest.raises(ArgumentError, match=r"image_size 4000x4000 with batch_size 32 needs 5.7 GiB for one batch"):
        check_batch_fits((4000, 4000), 32, memory=16 * 2**30)


def test_variable_bytes_counts_every_value_at_its_dtype():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    # Dense: 3x4 kernel + 4 biases; the norm: 4 each of gamma, beta, moving mean and variance; all float32.
    assert variable_bytes(model.weights) == (12 + 4 + 16) * 4
    assert variable_bytes([np.zeros((2, 5), np.float16), np.zeros(3, np.int64)]) == 2 * 5 * 2 + 3 * 8
    assert variable_bytes([]) == 0
