"""`featpipe compare` and `featpipe demo` as a user runs them."""

import json

import pytest
from click.testing import CliRunner

from featpipe.cli import main
from featpipe.runs import read_json


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.mark.slow
def test_grid_then_report_on_its_runs(dataset, tiny_model_file, tmp_path):
    grid = run("compare", dataset, "-b", tiny_model_file, "--head", "logreg", "--head", "linear-svm",
               "--cache-dir", tmp_path / "cache", "--runs-dir", tmp_path / "runs", "-o", tmp_path / "r1", "-q", "--json")
    assert grid.exit_code == 0, grid.output
    paths = json.loads(grid.stdout.strip().splitlines()[-1])
    assert "Best run, selected on validation accuracy" in grid.stdout
    summary = read_json(paths["summary_json"])
    assert sorted(row["head"] for row in summary["runs"]) == ["linear-svm", "logreg"]
    for row in summary["runs"]:
        metrics = read_json(f"{row['run_dir']}/metrics.json")
        assert row["test_accuracy"] == metrics["test"]["accuracy"]

    again = run("compare", tmp_path / "runs", tmp_path / "missing", "-o", tmp_path / "r2")
    assert again.exit_code == 0, again.output
    skipped = read_json(tmp_path / "r2" / "summary.json")["skipped"]
    assert [s["run_dir"] for s in skipped] == [str(tmp_path / "missing")]


@pytest.mark.parametrize("args, message", [
    (["compare", "-o", "{tmp}/r"], "give run directories to compare"),
    (["compare", "{tmp}/a", "{tmp}/b", "-b", "keras:VGG16", "-o", "{tmp}/r"], "one DATA folder"),
    (["compare", "-b", "keras:VGG16", "-o", "{tmp}/r"], "give the DATA folder"),
    (["compare", "{tmp}", "-o", "{tmp}/r"], "no finished run"),
    (["compare", "{tmp}/exp.toml", "--config", "{tmp}/missing.toml", "-o", "{tmp}/r"], "experiment file not found"),
])
def test_bad_input(tmp_path, args, message):
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1
    assert result.stderr.startswith("featpipe: error: ") and message in result.stderr


def test_help():
    for command in ("compare", "demo"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_unwritable_report_and_runs_dirs_are_one_line(tmp_path):
    """Issue 9, case 5."""
    from report_fixtures import make_run

    make_run(tmp_path / "runs", "a")
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("compare", tmp_path / "runs", "-o", blocker / "report")
    assert result.exit_code == 1 and result.stderr == f"featpipe: error: not a directory creating directory {blocker / 'report'}\n"


def test_demo_passes_its_options_and_prints_notes_and_verdict(tmp_path, monkeypatch):
    from featpipe import demo
    from featpipe.runs import write_json

    calls = []

    def fake_demo(out_dir, **kwargs):
        calls.append((out_dir, kwargs))
        verdict = {"lines": ["Pretrained vs random: +70.00 points."]}
        write_json(tmp_path / "summary.json", {"verdict": verdict, "verdicts": [verdict]})
        return {"html": tmp_path / "report.html", "summary_json": tmp_path / "summary.json", "notes": ["a note"]}

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    result = run("demo", "-o", tmp_path / "out", "--seed", 3, "--no-control", "--base-cache", tmp_path / "b", "-q")
    assert result.exit_code == 0, result.output
    (out_dir, kwargs), = calls
    assert out_dir == str(tmp_path / "out")
    assert (kwargs["seed"], kwargs["control"], kwargs["base_cache"], kwargs["progress"]) == (3, False, str(tmp_path / "b"), False)
    assert "note: a note" in result.stdout and "Pretrained vs random: +70.00 points." in result.stdout


@pytest.mark.slow
def test_compare_prints_one_verdict_per_dataset(tmp_path):
    from report_fixtures import make_run

    make_run(tmp_path / "runs", "cats-logreg", dataset="cats", seed=1)
    make_run(tmp_path / "runs", "flowers-svm", head="svm", dataset="flowers", seed=2)
    result = run("compare", tmp_path / "runs", "-o", tmp_path / "report")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"dataset cats ({tmp_path / 'cats'}):" in lines and f"dataset flowers ({tmp_path / 'flowers'}):" in lines
    assert sum(line.startswith("  Best run, selected on validation accuracy") for line in lines) == 2
