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
