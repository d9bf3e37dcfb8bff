import pytest

from featpipe.distribute import available_cores, select_devices
from featpipe.errors import FeatpipeError


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
    ("all", 2, 2, "--workers is for CPU runs"),
    ("0,5", 1, 2, "this machine has 2 visible GPU"),
    ("0,0", 1, 2, "this machine has 2 visible GPU"),
    ("0", 1, 0, "no GPU is visible"),
    ("first", 1, 2, "--devices must be all, cpu or GPU indices"),
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
