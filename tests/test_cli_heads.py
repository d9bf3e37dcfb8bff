"""featpipe train / predict / export on the command line: parsing, output, exit codes."""

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featpipe.cli import main
from heads_fixtures import real_cache, synthetic_cache


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def cache_path(tmp_path):
    return synthetic_cache(tmp_path)


def test_train_prints_one_json_line_per_head_and_reuses_finished_runs(cache_path, tmp_path):
    args = ["train", cache_path, "--head", "logreg", "--head", "svm", "--param", "C=0.1,1", "--no-data-check",
            "--runs-dir", tmp_path / "runs", "--json"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["head"] for line in lines] == ["logreg", "svm"] and not any(line["reused"] for line in lines)
    assert all(line["test_accuracy"] > 0.9 and line["run_dir"].startswith(str(tmp_path / "runs")) for line in lines)
    assert "trained logreg: " in result.stderr
    again = run(*args)
    assert [json.loads(line)["reused"] for line in again.stdout.splitlines()] == [True, True]
    assert "reused svm: " in again.stderr
    human = run(*args[:-1], "--force")
    assert human.stdout.startswith("trained logreg: ") and "val acc 1.0000" in human.stdout


@pytest.mark.parametrize("extra, message", [
    (["--head", "forest"], "unknown head 'forest'; choose from dense, logreg, linear-svm, svm, knn"),
    (["--head", "logreg", "--param", "units=3"], "unknown parameter 'units' for logreg"),
    (["--head", "logreg", "--param", "C=0,1"], "parameter C must be > 0, got '0'"),
    (["--head", "logreg", "--max-memory", "plenty"], "bad memory size 'plenty'"),
    (["--head", "logreg"], "cannot check that synthetic-0123456789abcdef.h5 still matches its dataset"),
])
def test_train_input_errors_are_one_line_exit_1(cache_path, extra, message):
    result = run("train", cache_path, *extra)
    assert result.exit_code == 1
    assert result.stderr.startswith("featpipe: error: ") and message in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_train_streams_linear_heads_and_refuses_an_exact_kernel_that_does_not_fit(cache_path, tmp_path):
    common = ["--no-data-check", "--runs-dir", tmp_path / "runs", "--json"]
    streamed = run("train", cache_path, "--head", "logreg", "--max-memory", "1K", *common)
    assert streamed.exit_code == 0, streamed.output
    info = json.loads((Path(json.loads(streamed.stdout)["run_dir"]) / "run.json").read_text())
    assert info["streamed"] is True and info["fit"]["solver"]["solver"] == "sgd"
    knn = run("train", cache_path, "--head", "knn", "--max-memory", "1K", *common)
    assert knn.exit_code == 0, knn.output
    row = json.loads(knn.stdout)
    assert json.loads((Path(row["run_dir"]) / "run.json").read_text())["streamed"] is True
    assert row["test_accuracy"] > 0.9
    refused = run("train", cache_path, "--head", "svm", "--param", "kernel=exact", "--max-memory", "60K", *common)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr.startswith("featpipe: error: svm: an exact RBF kernel on 60 training rows needs about")
    assert "use --param kernel=auto" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_train_usage_errors_exit_2(cache_path):
    result = run("train", cache_path)
    assert result.exit_code == 2 and "Missing option '--head'" in result.stderr and "Traceback" not in result.output


def test_predict_and_export_on_a_real_run(tmp_path, tiny_model_file):
    cache = real_cache(tmp_path, tiny_model_file, corrupt=True)
    trained = run("train", cache, "--head", "linear-svm", "--runs-dir", tmp_path / "runs", "--json")
    assert trained.exit_code == 0, trained.output
    run_dir = json.loads(trained.stdout)["run_dir"]
    out = tmp_path / "p.csv"
    result = run("predict", run_dir, tmp_path / "data" / "train" / "cat", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"output": str(out), "rows": 11, "errors": 3}  # 8 images + 3 bad files
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["path"].rsplit("/", 1)[1] for r in rows if r["error"]} == {"text.png", "truncated.jpg", "zero.jpg"}
    assert all(r["predicted_class"] in ("cat", "dog") for r in rows if not r["error"])
    exported = run("export", run_dir, tmp_path / "model.keras")
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.startswith("exported ") and (tmp_path / "model.keras").is_file()


def test_predict_errors(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "img.png").write_bytes(b"")
    unfinished = run("predict", tmp_path / "run", tmp_path / "img.png")
    assert unfinished.exit_code == 1 and "is not a finished run" in unfinished.stderr
    missing = run("predict", tmp_path / "run", tmp_path / "nothing.png")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.output


def test_help_on_every_head_command():
    for command in ("train", "predict", "export"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("params, message", [
    (["--head", "svm", "--param", "C=inf"], "parameter C must be a finite number, got 'inf'"),
    (["--head", "svm", "--param", "C=1,nan"], "parameter C must be a finite number, got 'nan'"),
    (["--head", "svm", "--param", "C=1", "--param", "C=10"], "--param C given twice"),
    (["--head", "dense", "--param", "units=100000000000"], "a dense head with units=100000000000 on 12 features"),
])
def test_hostile_params_are_one_line_errors(cache_path, tmp_path, params, message):
    """Issue 9, case 9."""
    result = run("train", cache_path, *params, "--no-data-check", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1, result.output


def test_a_head_scoped_param_overrides_the_shared_one_in_any_order():
    from featpipe.heads import parse_param_options

    for options in (["C=1", "svm.C=10"], ["svm.C=10", "C=1"]):
        parsed = parse_param_options(options, ["logreg", "svm"])
        assert parsed["svm"]["C"] == "10" and parsed["logreg"]["C"] == "1"


def test_a_read_only_runs_dir_is_one_line(cache_path, tmp_path):
    """Issue 9, case 5: read-only --runs-dir and an -o in a missing folder."""
    import os
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True).returncode:
            pytest.skip("cannot make a read-only mount here")
    else:
        ro.chmod(0o555)
    try:
        result = run("train", cache_path, "--head", "logreg", "--no-data-check", "--runs-dir", ro / "runs")
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "read-only file system" in result.output or "permission denied" in result.output
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(ro)], check=False)
    trained = run("train", cache_path, "--head", "logreg", "--no-data-check", "--runs-dir", tmp_path / "runs")
    run_dir = next((tmp_path / "runs").iterdir())
    result = run("predict", run_dir, tmp_path, "-o", "/nonexistent/dir/x.csv")
    assert trained.exit_code == 0 and result.exit_code == 1
    assert result.output == "featpipe: error: no such directory: /nonexistent/dir (for /nonexistent/dir/x.csv)\n"


@pytest.mark.slow
def test_two_trainings_of_one_head_at_once(cache_path, tmp_path):
    """Issue 20, item 8: the second `train` of a run directory being written says so in one line, exit 1."""
    import subprocess
    import sys

    from featpipe.runs import run_lock

    runs = tmp_path / "runs"
    with run_lock(runs / "synthetic-0123456789abcdef-logreg"):
        held = run("train", cache_path, "--head", "logreg", "--no-data-check", "--runs-dir", runs)
    assert held.exit_code == 1 and held.output.count("\n") == 1 and "Traceback" not in held.output
    assert held.stderr.startswith("featpipe: error: another featpipe process is writing run directory ")
    # Two real processes at once: each either trains, reuses the other's run, or is refused in one line.
    command = [sys.executable, "-c", "from featpipe.cli import main; main()", "train", str(cache_path), "--head", "svm", "--no-data-check",
               "--runs-dir", str(runs)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(120), p.stdout.read() + p.stderr.read()) for p in procs]
    for code, output in outcomes:
        assert (code == 0 and ("trained svm" in output or "reused svm" in output)) or (
            code == 1 and "another featpipe process is writing run directory" in output), output
    assert sum("trained svm" in output for _, output in outcomes) == 1


@pytest.mark.parametrize("head, memory", [("logreg", None), ("logreg", "1K"), ("svm", None), ("dense", None)])
def test_non_finite_features_are_refused_naming_split_and_count(tmp_path, head, memory):
    """Issue 20, item 3 (training side): NaN/inf rows, in memory or streamed, are one line, exit 1."""
    from heads_fixtures import splits, write_cache

    data = splits()
    features, labels = data["validation"]
    features = features.copy()
    features[[1, 4], 0] = [np.nan, np.inf]
    features[4, 3] = -np.inf  # two bad values in one row: still one row
    path = write_cache(tmp_path / "poisoned.h5", data, ["cat", "dog"])
    with h5py.File(path, "r+") as f:  # poisoned after the fact: extraction and assembly never store these
        f["validation/features"][...] = features
    extra = ["--max-memory", memory] if memory else []
    result = run("train", path, "--head", head, "--no-data-check", "--runs-dir", tmp_path / "runs", *extra)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"featpipe: error: poisoned.h5: 2 of {len(labels)} validation rows hold "
                                    "non-finite features (NaN or inf)")
    assert not (tmp_path / "runs" / f"poisoned-{head}" / "run.json").exists()


@pytest.mark.parametrize("head", ["svm", "linear-svm"])
def test_a_validation_split_of_one_class_trains_and_records_the_fallback(tmp_path, head):
    """Issue 20, item 4: every validation image of one class was unreadable."""
    from heads_fixtures import splits, write_cache

    data = splits()
    features, labels = data["validation"]
    data["validation"] = (features[labels == 1], labels[labels == 1])
    path = write_cache(tmp_path / "oneclass.h5", data, ["cat", "dog"])
    result = run("train", path, "--head", head, "--no-data-check", "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((Path(json.loads(result.stdout)["run_dir"]) / "metrics.json").read_text())
    assert metrics["selection"]["calibration"].startswith("none: logistic of the decision values")
    assert metrics["selection"]["kept_validation_accuracy"] == metrics["validation"]["accuracy"]
