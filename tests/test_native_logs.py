"""featpipe.native_logs and the command line's stderr (issue 20, item 9): TensorFlow's C++/absl lines only with
--verbose or FEATPIPE_DEBUG, usage errors before TensorFlow loads."""

import os
import subprocess
import sys

import pytest

from featpipe.native_logs import is_native_log

NATIVE = [
    b"I0000 00:00:1796088528.852094   27089 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
    b"E0000 00:00:1796088600.165049   24142 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    b"I0000 00:00:1796087594.363787   24142 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
    (b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
     b"appropriate compiler flags."),
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"2024-01-01 12:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on.",
]
OWN = [b"featpipe: error: no such directory: /x (for /x/y.csv)", b"Error: Invalid value for --shard",
       b"2026-12-01 01:00:00,123 WARNING featpipe.heads.estimators: svm: probabilities not calibrated",
       b"I0000 is not a log line without the rest", b"skipped train/cat/x.jpg: empty file"]


def test_native_log_lines_are_told_from_featpipes_own():
    assert all(is_native_log(line) for line in NATIVE)
    assert not any(is_native_log(line) for line in OWN)


SCRIPT = """
import os, sys
from featpipe.native_logs import quiet_native_logs
with quiet_native_logs(sys.argv[1] == "quiet"):
    for line in {lines!r}:
        os.write(2, line + b"\\n")  # as C++ code writes: straight to descriptor 2
    sys.stderr.write("\\r\\033[Kprogress 50%")  # a redrawn line with no newline yet
    sys.stderr.flush()
    print("featpipe: error: the last line", file=sys.stderr)
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_the_filter_drops_only_native_lines_in_order(mode):
    lines = [NATIVE[0], OWN[0], NATIVE[1], NATIVE[3], OWN[4]]
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(lines=lines), mode], capture_output=True, timeout=60)
    kept = lines if mode == "verbose" else [OWN[0], OWN[4]]
    assert done.stderr == b"".join(line + b"\n" for line in kept) + \
        b"\r\033[Kprogress 50%featpipe: error: the last line\n"


def featpipe(*args, env=None):
    return subprocess.run([sys.executable, "-c", "from featpipe.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_commands_keep_stderr_their_own_unless_verbose(tmp_path):
    from heads_fixtures import synthetic_cache

    cache = synthetic_cache(tmp_path)
    args = ["train", cache, "--head", "dense", "--param", "epochs=2", "--no-data-check", "--runs-dir",
            tmp_path / "runs", "--force"]  # dense: a head that loads TensorFlow
    quiet = featpipe(*args, env={"FEATPIPE_DEBUG": ""})
    assert quiet.returncode == 0 and quiet.stdout.startswith("trained dense")
    assert not any(is_native_log(line.encode()) for line in quiet.stderr.splitlines()), quiet.stderr
    listing = featpipe("cache", "ls", "--cache-dir", tmp_path)
    assert listing.returncode == 0 and listing.stderr == ""
    bad = featpipe("predict", tmp_path / "runs" / "synthetic-0123456789abcdef-dense", cache, "-o", "/nonexistent/x.csv")
    assert bad.returncode == 1 and bad.stderr.splitlines()[-1].startswith("featpipe: error: no such directory")
    loud = featpipe(*args, env={"FEATPIPE_DEBUG": "1"})
    assert loud.returncode == 0 and any(is_native_log(line.encode()) for line in loud.stderr.splitlines())


CHECK_USAGE = """
import sys
from featpipe.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    print(e.code, "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("args, code", [
    (["extract", "data", "-b", "x", "--shard", "5/2"], 2),
    (["extract", "data", "-b", "x", "--image-size", "big"], 2),
    (["extract", "data", "-b", "x", "--engine", "ray", "--workers", "2"], 2),
    (["extract", "data", "-b", "x", "--ray-address", "localhost:1"], 2),
    (["finetune", "data", "-b", "x", "--unfreeze-top", "2", "--unfreeze-all"], 1),
    (["finetune", "data", "-b", "x", "--image-size", "0x"], 2),
    (["finetune", "/nonexistent", "-b", "x"], 1),
])
def test_usage_errors_come_before_tensorflow_loads(args, code):
    done = subprocess.run([sys.executable, "-c", CHECK_USAGE, *args], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == [str(code), "False"], done.stderr
