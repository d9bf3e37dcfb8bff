"""Settings TensorFlow reads once, when it is imported, that featpipe's commands and workers choose for it.

oneDNN CPU kernels: TensorFlow's x86 Linux builds turn them on by themselves only on CPUs with AVX-512 VNNI or
BF16, AVX-VNNI or AMX; on other CPUs its own Eigen kernels run, and the frozen base's forward pass, the
bottleneck of an extraction on a CPU, is 1.2-2.6x slower (measured on a 2-core AMD EPYC without AVX-512:
MobileNet 0.25 190 -> 318 img/s, MobileNetV2 39 -> 80, EfficientNetB0 22 -> 57, ResNet50 12 -> 17;
`python bench/bench_extract.py` prints both). So featpipe turns them on unless TF_ENABLE_ONEDNN_OPTS is set
already (TF_ENABLE_ONEDNN_OPTS=0 keeps Eigen's). The two give features equal to within float32 rounding, so the
cache key does not depend on it. It has no effect on a GPU's kernels.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Turn TensorFlow's oneDNN CPU kernels on for this process, unless the user chose (`environ` has
    TF_ENABLE_ONEDNN_OPTS) or TensorFlow is imported already (it read the setting then). Returns whether it did."""
    if ONEDNN in environ or "tensorflow" in sys.modules:
        return False
    environ[ONEDNN] = "1"
    return True
