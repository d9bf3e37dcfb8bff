"""`featpipe finetune`: a run end to end through the CLI, what it records and prints, reuse and --force, and bad
options as one-line errors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_dataset

from featpipe import runs
from featpipe.cli import main
from hostile_fixtures import small_disk  # noqa: F401  (a fixture)

FAST = ["--weights", "none", "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "8", "--quiet"]


def _invoke(*args):
    return CliRunner().invoke(main, ["finetune", *map(str, args)])


def _summary(result) -> dict:
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.slow
def test_finetune_writes_a_run_as_asked_and_reuses_it(tmp_path, dataset, tiny_model_file):
    args = [dataset, "--backbone", tiny_model_file, *FAST, "--unfreeze-from", "conv2", "--optimizer", "adam",
            "--augment", "flip=vertical", "--pooling", "max", "--runs-dir", tmp_path, "--json"]
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    summary = _summary(result)
    assert summary["head"] == "finetune" and not summary["reused"]
    loaded = runs.load_run(summary["run_dir"])
    info, metrics, history = loaded["run"], loaded["metrics"], loaded["history"]
    # The options reached the library: they are what the run records.
    assert info["params"] == {**info["params"], "unfreeze": "from:conv2", "optimizer": "adam",
                              "augment": "flip=vertical", "pooling": "max", "epochs": 1, "fine_tune_epochs": 1,
                              "batch_size": 8}
    assert info["name"].startswith("finetune-tiny.keras-32-") and info["compute_dtype"] == "float32"
    # --batch-size is per device; on this one-device machine it is the global batch, with no strategy.
    assert info["distribution"] == {"strategy": "none", "replicas": 1, "devices": [], "per_device_batch_size": 8,
                                    "global_batch_size": 8}
    assert [phase["name"] for phase in history["phases"]] == ["frozen", "fine-tune"]
    # What it prints is what it measured.
    assert summary["val_accuracy"] == metrics["validation"]["accuracy"]
    assert summary["test_accuracy"] == metrics["test"]["accuracy"]
    assert f"finished: {summary['run_dir']}" in result.output
    assert f"test accuracy {metrics['test']['accuracy']:.4f}" in result.output
    model = keras.saving.load_model(f"{summary['run_dir']}/model.keras")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 2)
    # The same command finds the finished run instead of training again; --force trains it again.
    again = _invoke(*args)
    assert again.exit_code == 0 and f"reused: {summary['run_dir']}" in again.output
    assert _summary(again)["reused"] and _summary(again)["run_dir"] == summary["run_dir"]
    forced = _invoke(*args, "--force")
    assert forced.exit_code == 0 and f"finished: {summary['run_dir']}" in forced.output
    assert not _summary(forced)["reused"]


@pytest.mark.slow
def test_the_command_leaves_the_dtype_policy_as_it_found_it(tmp_path, dataset, tiny_model_file):
    result = _invoke(dataset, "--backbone", tiny_model_file, *FAST, "--epochs", "0", "--precision", "mixed",
                     "--runs-dir", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert runs.load_run(_summary(result)["run_dir"])["run"]["compute_dtype"] == "float16"
    assert keras.mixed_precision.dtype_policy().name == "float32"
    proba = keras.saving.load_model(f"{_summary(result)['run_dir']}/model.keras")(np.zeros((1, 32, 32, 3)))
    assert proba.dtype == "float32"


@pytest.mark.parametrize("extra, message", [
    (["--unfreeze-from", "conv9"], "the base has no layer 'conv9'"),
    (["--unfreeze-top", "99"], "unfreeze top:N must have N between 1 and 5"),
    (["--unfreeze-top", "2", "--unfreeze-all"], "use only one of"),
    (["--epochs", "-1"], "--epochs must be 0 or more"),
    (["--augment", "flip,warp=1"], "unknown augmentation 'warp'"),
    (["--batch-size", "0"], "--batch-size must be positive"),
])
def test_bad_options_exit_1_with_one_line(tmp_path, dataset, tiny_model_file, extra, message):
    result = _invoke(dataset, "--backbone", tiny_model_file, *FAST, "--runs-dir", tmp_path / "runs", *extra)
    assert result.exit_code == 1
    assert f"featpipe: error: {message}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_dataset_without_validation_needs_val_fraction(tmp_path, tiny_model_file):
    data = make_dataset(tmp_path / "data", per_split={"train": 6, "test": 2})
    result = _invoke(data, "--backbone", tiny_model_file, *FAST, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "no validation/ split; carve one with --val-fraction" in result.output


def test_one_class_is_refused_up_front(tmp_path, tiny_model_file):
    """Issue 9, case 8: before any epoch, like train."""
    data = make_dataset(tmp_path / "one", classes=("cat",))
    result = _invoke(data, "--backbone", tiny_model_file, *FAST, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "has one class (cat)" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_full_disk_is_one_line_and_leaves_no_finished_run(tmp_path, dataset, tiny_model_file, small_disk):
    """Issue 9, case 4: no h5py tracebacks, no segmentation fault."""
    from hostile_fixtures import fill

    fill(small_disk, leave=16384)
    result = _invoke(dataset, "--backbone", tiny_model_file, *FAST, "--runs-dir", small_disk / "runs")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1].startswith("featpipe: error: no space left on device writing")
    assert "Traceback" not in result.output and not list((small_disk / "runs").rglob("run.json"))
