"""`featpipe finetune`: a run end to end through the CLI, reuse, and bad options as one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import make_dataset

from featpipe import runs
from featpipe.augment import DEFAULT_AUGMENT
from featpipe.cli import main
from featpipe.cli import finetune_cmds
from hostile_fixtures import small_disk  # noqa: F401  (a fixture)

FAST = ["--weights", "none", "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "8", "--quiet"]


def _invoke(*args):
    return CliRunner().invoke(main, ["finetune", *map(str, args)])


def test_finetune_writes_a_run_and_reuses_it(tmp_path, dataset, tiny_model_file):
    args = [dataset, "--backbone", tiny_model_file, *FAST, "--unfreeze-from", "conv2", "--runs-dir", tmp_path, "--json"]
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["head"] == "finetune" and not summary["reused"]
    assert 0 <= summary["val_accuracy"] <= 1 and 0 <= summary["test_accuracy"] <= 1 and summary["seconds"] > 0
    loaded = runs.load_run(summary["run_dir"])
    assert loaded["run"]["params"]["unfreeze"] == "from:conv2"
    assert loaded["run"]["name"].startswith("finetune-tiny.keras-32-")
    again = _invoke(*args)
    assert again.exit_code == 0 and "reused:" in again.output
    assert json.loads(again.output.strip().splitlines()[-1])["reused"]


@pytest.mark.parametrize("extra, message", [
    (["--unfreeze-from", "conv9"], "the base has no layer 'conv9'"),
    (["--unfreeze-top", "99"], "--unfreeze-top must be between 1 and 5"),
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


def test_cli_default_augment_matches_the_library():
    assert finetune_cmds.DEFAULT_AUGMENT == DEFAULT_AUGMENT


def test_one_class_is_refused_up_front(tmp_path, tiny_model_file):
    """Issue 9, case 8: before any epoch, like train."""
    data = make_dataset(tmp_path / "one", classes=("cat",))
    result = _invoke(data, "--backbone", tiny_model_file, *FAST, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "has one class (cat)" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.timeout(300)
def test_a_full_disk_is_one_line_and_leaves_no_finished_run(tmp_path, dataset, tiny_model_file, small_disk):
    """Issue 9, case 4: no h5py tracebacks, no segmentation fault."""
    from hostile_fixtures import fill

    fill(small_disk, leave=16384)
    result = _invoke(dataset, "--backbone", tiny_model_file, *FAST, "--runs-dir", small_disk / "runs")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1].startswith("featpipe: error: no space left on device writing")
    assert "Traceback" not in result.output and not list((small_disk / "runs").rglob("run.json"))
