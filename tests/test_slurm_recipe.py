"""The Slurm recipe in examples/slurm/, run without Slurm: its array tasks as plain processes with the
SLURM_ARRAY_* variables set, SIGTERM as at preemption, then the merge job — equal to one process."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_dataset
from featpipe.backbones import load_backbone
from featpipe.data import load_image_folder
from featpipe.extraction import extract
from featpipe.parts import shard_parts
from featpipe.workdir import WorkDir
from test_extract import assert_same_cache

SLURM = Path(__file__).resolve().parents[1] / "examples" / "slurm"
SCRIPTS = ["extract_array.sbatch", "merge.sbatch", "submit.sh"]


def env_for(data, model, cache, **slurm) -> dict:
    # The `featpipe` entry point of this Python; the worktree's featpipe first, as in the test process.
    return dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
                PYTHONPATH=os.pathsep.join(sys.path), FEATPIPE_DATA=str(data), FEATPIPE_BACKBONE=model,
                FEATPIPE_CACHE_DIR=str(cache), FEATPIPE_EXTRACT_ARGS="--batch-size 2 --part-rows 2 -q",
                **{k: str(v) for k, v in slurm.items()})


def array_task(env, task_id, count, first=0) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(SLURM / "extract_array.sbatch")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**env, "SLURM_ARRAY_TASK_ID": str(task_id), "SLURM_ARRAY_TASK_COUNT": str(count),
                                 "SLURM_ARRAY_TASK_MIN": str(first)})


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_keep_their_directives_where_sbatch_reads_them(script):
    subprocess.run(["bash", "-n", str(SLURM / script)], check=True)
    lines = (SLURM / script).read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    # sbatch stops reading #SBATCH lines at the first command.
    assert not [line for line in lines[first_command:] if line.startswith("#SBATCH")]


def test_the_array_requeues_and_is_warned_before_the_kill():
    directives = re.findall(r"^#SBATCH (\S+)", (SLURM / "extract_array.sbatch").read_text(), re.M)
    assert "--requeue" in directives and "--gres=gpu:1" in directives
    assert any(re.fullmatch(r"--signal=B:TERM@\d+", d) for d in directives)
    submit = (SLURM / "submit.sh").read_text()
    assert 'sbatch --parsable --dependency="afterok:$array_job"' in submit


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path / "data", per_split={"train": 20, "validation": 3, "test": 3})


@pytest.fixture
def whole(data, tiny_model_file, tmp_path):
    return extract(load_image_folder(data), load_backbone(tiny_model_file), tmp_path / "whole", batch_size=4,
                   progress=False)


@pytest.mark.slow
def test_array_tasks_preempted_requeued_then_merged_equal_one_process(data, tiny_model_file, tmp_path, whole):
    cache = tmp_path / "cache"
    env = env_for(data, tiny_model_file, cache)
    # An array numbered from 4 (--array=4-5), both tasks at once; task 4 (shard 0/2) is preempted.
    preempted, other = array_task(env, 4, 2, first=4), array_task(env, 5, 2, first=4)
    while not list(cache.glob("*.partial/*.h5")):
        assert preempted.poll() is None and other.poll() is None, [finish(preempted), finish(other)]
        time.sleep(0.02)
    preempted.send_signal(signal.SIGTERM)  # to the batch shell, as --signal=B:TERM does
    status, log = finish(preempted)
    assert status != 0 and "SIGTERM: stopping shard 0/2" in log, log
    assert finish(other)[0] == 0
    workdir = WorkDir(next(cache.glob("*.partial")).with_suffix(""))
    # Shard 0 was stopped long before its ~13 parts were done; what it wrote is sound and stays.
    assert workdir.missing(shard_parts(workdir.plan(), 0, 2)) and not workdir.missing(shard_parts(workdir.plan(), 1, 2))

    requeued = finish(array_task(env, 4, 2, first=4))  # the requeued task does what is missing
    assert requeued[0] == 0, requeued[1]
    merged = subprocess.run(["bash", str(SLURM / "merge.sbatch")], env=env, capture_output=True, text=True)
    assert merged.returncode == 0 and merged.stdout.startswith("merged: "), merged.stderr
    assert not workdir.path.exists()
    assert_same_cache(workdir.final_path, whole.path)
