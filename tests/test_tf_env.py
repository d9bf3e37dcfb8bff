import os
import subprocess
import sys

import pytest

from featpipe.tf_env import ONEDNN, prefer_onednn


def test_prefer_onednn_turns_the_kernels_on_before_tensorflow_is_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    environ = {}
    assert prefer_onednn(environ) is True
    assert environ == {ONEDNN: "1"}


def test_prefer_onednn_leaves_the_users_choice(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    environ = {ONEDNN: "0"}
    assert prefer_onednn(environ) is False
    assert environ == {ONEDNN: "0"}


def test_prefer_onednn_does_nothing_once_tensorflow_is_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", sys)  # any module: TensorFlow has read the setting already
    environ = {}
    assert prefer_onednn(environ) is False
    assert environ == {}


def onednn_in_a_fresh_process(env_value):
    # TensorFlow's own answer, in a process where only featpipe's command entry ran before it was imported.
    code = ("import os, sys\n"
            "from featpipe.cli import main\n"
            "try:\n    main(['-v', 'cache', 'ls', '--help'], standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), _pywrap_util_port.IsMklEnabled())\n")
    env = {k: v for k, v in os.environ.items() if k != ONEDNN}
    if env_value is not None:
        env[ONEDNN] = env_value
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.split()[-2:]


@pytest.mark.slow  # two fresh processes import TensorFlow
def test_the_command_runs_tensorflow_with_onednn_unless_the_user_said_no():
    assert onednn_in_a_fresh_process(None) == ["1", "True"]
    assert onednn_in_a_fresh_process("0") == ["0", "False"]
