"""featpipe.choices: one module of shared choices, importable without TensorFlow, that the CLI and the
library both use (so there is nothing to keep in step)."""

from __future__ import annotations

import subprocess
import sys

from featpipe import choices


def test_importing_the_choices_and_the_cli_does_not_import_tensorflow():
    script = "import sys, featpipe.choices, featpipe.cli; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]


def test_every_optimizer_name_is_a_keras_optimizer():
    import keras

    from featpipe.model_parts import make_optimizer

    for name, class_name in choices.OPTIMIZERS.items():
        assert isinstance(make_optimizer(name, 0.1), getattr(keras.optimizers, class_name))
