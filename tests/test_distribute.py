import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from featpipe import distribute
from featpipe.cli import interrupt_handlers
from featpipe.distribute import available_cores, available_memory, cap_workers, run_local_workers, select_devices
from featpipe.errors import FeatpipeError, Interrupted
from featpipe.parts import Part
from featpipe.workdir import WorkDir


@pytest.mark.parametrize("devices, workers, gpus, env, expected", [
    ("all", 1, 0, None, [None]),                 # no GPU: this process, on the CPU
    ("all", 3, 0, None, [None, None, None]),     # CPU worker processes
    ("cpu", 2, 4, None, [None, None]),           # the CPU on a GPU node
    ("all", 1, 1, None, [None]),                 # the only GPU: this process
    ("all", 1, 4, None, ["0", "1", "2", "3"]),   # one worker per GPU
    ("all", 1, 2, "4,6", ["4", "6"]),            # ... as the node's CUDA ids
    ("1,3", 1, 4, "0,1,2,3", ["1", "3"]),
    ("0", 1, 2, "5,7", ["5"]),                   # one GPU that is not this process's first: a worker
])
def test_devices_become_one_worker_each(monkeypatch, devices, workers, gpus, env, expected):
    if env is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert select_devices(devices, workers, gpus) == expected


@pytest.mark.parametrize("devices, workers, gpus, message", [
    ("all", 2, 2, r"^workers is for CPU runs; on GPUs one worker runs per device \(devices\)$"),
    ("0,5", 1, 2, "^devices 0,5: this machine has 2 visible GPU"),
    ("0,0", 1, 2, "this machine has 2 visible GPU"),
    ("0", 1, 0, "no GPU is visible"),
    ("first", 1, 2, "^devices must be all, cpu or GPU indices"),  # Python callers read argument names
])
def test_bad_device_requests(monkeypatch, devices, workers, gpus, message):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(FeatpipeError, match=message):
        select_devices(devices, workers, gpus)


def test_cores_are_those_this_process_may_use():
    assert 1 <= available_cores()


def test_a_killed_worker_is_named_by_its_signal_and_a_failed_one_by_its_own_last_line(tmp_path):
    """Issue 20, item 9: not by its log's last line, which after SIGKILL is whatever CUDA said last."""
    from featpipe.distribute import _how

    log = tmp_path / "worker-0.log"
    log.write_bytes(b"featpipe: error: no space left on device writing x.h5\n"
                    b"E0000 00:00:1796088528.852094   27089 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\n")
    assert _how(-9, str(log)) == f"was killed by signal 9 (SIGKILL) (log: {log})"
    assert _how(-15, str(log)).startswith("was killed by signal 15 (SIGTERM)")
    assert _how(3, str(log)) == "failed (exit 3): featpipe: error: no space left on device writing x.h5"
    assert _how(-200, str(tmp_path / "gone.log")).startswith("was killed by signal 200 (log:")


GiB = 1 << 30


@pytest.mark.parametrize("devices, cores, memory, kept, says", [
    ([None] * 64, 2, 24 * GiB, 2, "64 worker processes requested, 2 started: 2 cores allow 2"),
    ([None] * 8, 16, 2 * GiB, 2, "8 worker processes requested, 2 started: 2.0 GiB of available memory"),
    ([None] * 2, 2, 24 * GiB, 2, None),                       # what the node holds: untouched
    ([None] * 4, 8, None, 4, None),                            # memory unknown: cores only
    (["0", "1", "2", "3"], 1, 24 * GiB, 4, None),              # GPU workers are not capped by cores
    (["0", "1", "2", "3"], 8, 1 * GiB, 1, "4 GPU workers (kept: 0) requested, 1 started"),
])
def test_workers_are_capped_by_cores_and_memory(devices, cores, memory, kept, says):
    chosen, note = cap_workers(devices, cores, memory)
    assert chosen == devices[:kept]
    assert (note is None) if says is None else note.startswith(says)


def test_memory_this_process_can_use_is_measured():
    memory = available_memory()
    assert memory is None or 0 < memory < 1 << 50


def test_make_engine_caps_workers_and_says_so(monkeypatch, caplog):
    from featpipe.engines import make_engine
    from featpipe.extraction import InProcessEngine

    monkeypatch.setattr(distribute, "available_cores", lambda: 2)
    monkeypatch.setattr(distribute, "available_memory", lambda: 24 * GiB)
    engine = make_engine(workers=64, devices="cpu")
    assert isinstance(engine, distribute.LocalEngine) and engine.workers() == 2 and not engine.gpus
    assert "64 worker processes requested, 2 started: 2 cores allow 2" in caplog.text
    monkeypatch.setattr(distribute, "available_memory", lambda: 100 << 20)  # room for one: this process
    assert isinstance(make_engine(workers=4, devices="cpu"), InProcessEngine)


@pytest.mark.parametrize("kwargs, message", [
    ({"engine": "spark"}, "^engine must be one of local, ray"),
    ({"workers": 0}, "^workers must be at least 1"),
    ({"address": "auto"}, "^address is for the Ray engine"),
    ({"engine": "ray", "workers": 2}, "devices and workers are for the local engine"),
])
def test_make_engine_refuses_what_does_not_fit(kwargs, message):
    from featpipe.engines import make_engine

    with pytest.raises(FeatpipeError, match=message):
        make_engine(**kwargs)


# A worker that takes its time to start (as TensorFlow's import does) and ignores nothing: SIGTERM's default.
SLOW_START = (sys.executable, "-c", "import sys, time; sys.stdin.read(); time.sleep(120)")


def _workdir(tmp_path) -> WorkDir:
    workdir = WorkDir(tmp_path / "cache.h5")
    workdir.path.mkdir()
    return workdir


def test_sigterm_while_workers_start_stops_them_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(distribute, "WORKER_COMMAND", SLOW_START)
    started = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(distribute.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k))
                        or started[-1])
    parts = [Part("train", 4 * k, 4 * k + 4) for k in range(4)]
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    start = time.monotonic()
    with pytest.raises(Interrupted), interrupt_handlers():
        run_local_workers({}, parts, [None] * 4, _workdir(tmp_path), progress=False)
    assert time.monotonic() - start < 10
    assert len(started) == 4 and all(proc.poll() == -signal.SIGTERM for proc in started)


def test_an_interrupt_between_worker_starts_stops_those_already_started(tmp_path, monkeypatch):
    monkeypatch.setattr(distribute, "WORKER_COMMAND", SLOW_START)
    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        if len(started) == 2:
            raise KeyboardInterrupt  # as a signal arriving while the third one is being started
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(distribute.subprocess, "Popen", popen)
    with pytest.raises(KeyboardInterrupt):
        run_local_workers({}, [Part("train", 4 * k, 4 * k + 4) for k in range(4)], [None] * 4, _workdir(tmp_path),
                          progress=False)
    assert len(started) == 2 and all(proc.poll() is not None for proc in started)


def test_a_worker_still_loading_dies_at_once_on_sigterm():
    # The real worker, SIGTERMed while it imports TensorFlow: nothing to commit yet, so it ends at once
    # (SIGTERM's default action) instead of waiting for the import to return to Python.
    proc = subprocess.Popen([sys.executable, "-m", "featpipe.worker"], stdin=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    proc.stdin.write(b'{"job": {}, "parts": []}')
    proc.stdin.close()
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM and time.monotonic() - start < 2


def test_a_worker_ends_when_its_parent_dies(tmp_path):
    # Workers have their own session (no terminal hang-up reaches them): the kernel ends them with the parent.
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "w = subprocess.Popen([sys.executable, '-m', 'featpipe.worker'], stdin=subprocess.PIPE,"
        " stderr=subprocess.DEVNULL, start_new_session=True)\n"
        "w.stdin.write(b'{\"job\": {}, \"parts\": []}'); w.stdin.close()\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    time.sleep(0.5)  # the worker is importing TensorFlow, which takes longer than the two seconds below
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and _alive(worker):
        time.sleep(0.1)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line for line in f)  # a zombie has ended
    except FileNotFoundError:
        return False
