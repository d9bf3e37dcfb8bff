"""Keep a command's stderr featpipe's own: TensorFlow's C++ and absl log lines are dropped unless asked for.

TensorFlow logs from C++ straight to file descriptor 2 (cuInit failures, cudart stubs, oneDNN notes, CPU
feature guards), and those written before absl is initialised ignore TF_CPP_MIN_LOG_LEVEL. So, for the length
of a command, descriptor 2 is a pipe read by a thread that forwards every line except the ones in those
libraries' formats; Python's own output (featpipe's errors, warnings, progress) passes through in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from typing import Iterator

NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]\s]+:\d+\] "  # absl / glog: I0000 00:00:... file.cc:31] ...
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\] "  # TensorFlow's older format
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .*, rebuild TensorFlow with the appropriate compiler flags\.)"
)
# First bytes a native log line can start with: a partial line starting otherwise (a progress line redrawn with
# "\r") is forwarded at once, not held back until its newline.
_NATIVE_STARTS = frozenset(b"IWEFT0123456789")
# Seconds to wait, at the end, for lines still in the pipe.
DRAIN_SECONDS = 2.0


def is_native_log(line: bytes) -> bool:
    return bool(NATIVE_LOG_LINE.match(line))


@contextlib.contextmanager
def quiet_native_logs(enabled: bool = True) -> Iterator[None]:
    """While the block runs, drop TensorFlow's and absl's native log lines from stderr (see module doc)."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):  # no descriptor 2 to filter (a daemon, a closed stderr): nothing to do
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, original), name="featpipe-stderr", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end here closes: the forwarder reads to its end
        forwarder.join(DRAIN_SECONDS)  # a child still holding the pipe must not hold the command up
        if not forwarder.is_alive():
            os.close(original)


def _forward(read_end: int, target: int) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_native_log(line))
            if pending and pending[0] not in _NATIVE_STARTS:
                kept, pending = kept + pending, b""
            _write(target, kept)
    if pending and not is_native_log(pending):
        _write(target, pending)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:  # stderr itself went away: nothing left to show it to
            return
