"""Load a saved .keras file in a fresh interpreter where featpipe cannot be imported, as a user's server would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

_SCRIPT = """
import sys
sys.modules["featpipe"] = None  # any import of featpipe now fails: the file must load with plain Keras
import json, keras, numpy as np
model = keras.models.load_model(sys.argv[1])
outputs = keras.ops.convert_to_numpy(model(np.load(sys.argv[2])))
loaded = [name for name, module in sys.modules.items() if name.startswith("featpipe") and module is not None]
print(json.dumps({"outputs": outputs.tolist(), "featpipe": loaded}))
"""


def outputs_without_featpipe(model_file: str | os.PathLike, images: np.ndarray, tmp_path: Path) -> np.ndarray:
    """What plain `keras.models.load_model(model_file)` computes for `images`, in a subprocess."""
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(model_file), str(tmp_path / "images.npy")],
                          capture_output=True, text=True, cwd=tmp_path, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["featpipe"] == []  # no featpipe module was loaded
    return np.array(result["outputs"], np.float32)
