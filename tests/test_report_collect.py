import csv
import json

import pytest

from featpipe.errors import FeatpipeError
from featpipe.report import write_report
from featpipe.report.collect import collect_runs
from featpipe.report.statistics import wilson_interval
from featpipe.runs import write_json
from hostile_fixtures import small_disk  # noqa: F401  (a fixture)
from report_fixtures import make_history, make_run


def test_write_report_produces_every_file(tmp_path):
    make_run(tmp_path / "runs", "vgg-logreg")
    make_run(tmp_path / "runs", "ft", path="end-to-end", val=0.9, fit=50, history=make_history())
    paths = write_report([tmp_path / "runs"], tmp_path / "out" / "nested")
    for key in ("html", "markdown", "summary_json", "summary_csv"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    assert paths["html"].name == "report.html" and paths["markdown"].name == "report.md"
    assert paths["plots"] and all(p.is_file() and p.suffix == ".png" for p in paths["plots"])


def test_summary_rows_agree_exactly_with_metrics_json(tmp_path):
    make_run(tmp_path, "a", val=0.7, test=0.675, extract=3.3, fit=1.1, images_per_second=12.5)
    make_run(tmp_path, "b", backbone="xception_41_imagenet", head="svm", classes=["x", "y", "z"],
             val=0.8, test=0.725, seed=3)
    make_run(tmp_path, "c", path="end-to-end", val=0.6, test=0.6, fit=41.7, history=make_history())
    paths = write_report([tmp_path], tmp_path / "report")
    summary = json.loads(paths["summary_json"].read_text())
    with open(paths["summary_csv"], newline="") as f:
        csv_rows = {r["name"]: r for r in csv.DictReader(f)}
    assert [r["name"] for r in summary["runs"]] == ["b", "a", "c"]  # ranked by validation accuracy
    assert set(csv_rows) == {"a", "b", "c"}
    for row in summary["runs"]:
        metrics = json.loads((tmp_path / row["name"] / "metrics.json").read_text())
        info = json.loads((tmp_path / row["name"] / "run.json").read_text())
        expected = {
            "val_accuracy": metrics["validation"]["accuracy"],
            "test_accuracy": metrics["test"]["accuracy"],
            "test_balanced_accuracy": metrics["test"]["balanced_accuracy"],
            "test_log_loss": metrics["test"]["log_loss"],
            "test_roc_auc": metrics["test"]["roc_auc"],
            "extract_seconds": metrics["timing"]["extract_seconds"],
            "fit_seconds": metrics["timing"]["fit_seconds"],
            "total_seconds": metrics["timing"]["total_seconds"],
        }
        for key, value in expected.items():
            assert row[key] == value, key
            assert float(csv_rows[row["name"]][key]) == value, key  # exact, not approximately
        for key in ("backbone", "head", "path", "pretrained", "image_size"):
            assert row[key] == info[key]
        assert csv_rows[row["name"]]["image_size"] == "32x32"
        assert row["run_dir"] == str(tmp_path / row["name"])
        # How sure: the Wilson interval of the test accuracy over its n images, and the calibration error.
        assert row["test_n"] == metrics["test"]["n"] == 40
        assert row["test_accuracy_ci"] == list(wilson_interval(round(row["test_accuracy"] * 40), 40))
        assert row["test_ece"] == metrics["test"]["ece"]
        csv_row = csv_rows[row["name"]]
        assert [float(csv_row["test_accuracy_ci_low"]), float(csv_row["test_accuracy_ci_high"])] == row["test_accuracy_ci"]
        assert csv_row["label"] == row["label"] and "/" not in row["label"]
    assert {r["name"]: r["label"] for r in summary["runs"]} == {
        "a": "VGG16 · logreg", "b": "xception_41_imagenet · svm", "c": "VGG16 · fine-tune"}


def test_a_run_made_before_metrics_had_ece_reports_a_dash(tmp_path):
    run = make_run(tmp_path / "runs", "old", predictions=False)
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("ece", "ece_bins", "reliability"):
            del metrics[split][key]
    write_json(run / "metrics.json", metrics)
    paths = write_report([tmp_path / "runs"], tmp_path / "out")
    summary = json.loads(paths["summary_json"].read_text())
    assert summary["runs"][0]["test_ece"] is None
    assert summary["runs"][0]["test_accuracy_ci"] is not None  # the interval needs only accuracy and n
    assert "no per-image predictions" in paths["html"].read_text()


def test_ties_broken_by_test_accuracy_then_lower_compute(tmp_path):
    make_run(tmp_path, "slow", val=0.8, test=0.8, extract=10, fit=50)
    make_run(tmp_path, "fast", val=0.8, test=0.8, extract=10, fit=1)
    make_run(tmp_path, "worse-test", val=0.8, test=0.7, extract=1, fit=0.1)
    runs, _ = collect_runs([tmp_path])
    assert [r["row"]["name"] for r in runs] == ["fast", "slow", "worse-test"]
    assert [r["row"]["rank"] for r in runs] == [1, 2, 3]


def test_unfinished_and_missing_runs_are_skipped_with_reasons(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "good")
    crashed = root / "crashed"  # metrics written, died before run.json
    crashed.mkdir()
    write_json(crashed / "metrics.json", {"validation": {}})
    running = make_run(root, "running")
    info = json.loads((running / "run.json").read_text())
    write_json(running / "run.json", {**info, "status": "running"})
    broken = make_run(root, "broken")
    (broken / "metrics.json").unlink()
    missing = tmp_path / "does-not-exist"

    paths = write_report([root, missing], tmp_path / "out")
    summary = json.loads(paths["summary_json"].read_text())
    assert [r["name"] for r in summary["runs"]] == ["good"]
    reasons = {s["run_dir"]: s["reason"] for s in summary["skipped"]}
    assert "no run.json" in reasons[str(crashed)]
    assert "'running'" in reasons[str(running)]
    assert "missing file" in reasons[str(broken)] and "metrics.json" in reasons[str(broken)]
    assert "no such run directory" in reasons[str(missing)]
    assert {s["name"] for s in summary["skipped"]} == {None, "running", "broken"}
    html = paths["html"].read_text()
    markdown = paths["markdown"].read_text()
    for run_dir in reasons:
        assert run_dir in html
        assert run_dir.replace("_", r"\_") in markdown  # Markdown escapes its emphasis characters
    assert "4 run(s) skipped" in html


def test_a_run_passed_twice_is_reported_once(tmp_path):
    run = make_run(tmp_path, "once")
    runs, skipped = collect_runs([tmp_path, run])
    assert len(runs) == 1 and skipped == []


def test_no_finished_run_is_a_featpipe_error(tmp_path):
    (tmp_path / "half").mkdir()
    write_json(tmp_path / "half" / "metrics.json", {})
    with pytest.raises(FeatpipeError, match="no finished run"):
        write_report([tmp_path], tmp_path / "out")
    with pytest.raises(FeatpipeError, match="no finished run"):
        write_report([], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("smooth", [-0.1, 1.0, 2])
def test_bad_smoothing_factor_is_a_featpipe_error(tmp_path, smooth):
    make_run(tmp_path, "a")
    with pytest.raises(FeatpipeError, match="smoothing"):
        write_report([tmp_path], tmp_path / "out", smooth=smooth)


def test_summary_csv_cells_cannot_be_formulas(tmp_path):
    """Issue 9, case 9: a run or backbone named like a formula is text in the spreadsheet."""
    make_run(tmp_path / "runs", "=cmd|' /C calc'!A0", backbone="@SUM(A1)", head="+1", val=0.9)
    make_run(tmp_path / "runs", "-2+3", val=0.8)
    paths = write_report([tmp_path / "runs"], tmp_path / "report")
    with open(paths["summary_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["'=cmd|' /C calc'!A0", "'-2+3"]
    assert rows[0]["backbone"] == "'@SUM(A1)" and rows[0]["head"] == "'+1"
    assert float(rows[0]["val_accuracy"]) == 0.9  # numbers stay numbers


def test_a_full_report_disk_keeps_the_previous_report(tmp_path, small_disk):
    from hostile_fixtures import fill

    make_run(tmp_path / "runs", "a")
    first = write_report([tmp_path / "runs"], small_disk / "report")
    before = {p: p.read_bytes() for p in (first["html"], first["summary_csv"], first["summary_json"])}
    make_run(tmp_path / "runs", "b", val=0.95)
    fill(small_disk)
    with pytest.raises(FeatpipeError, match="^no space left on device writing"):
        write_report([tmp_path / "runs"], small_disk / "report")
    assert {p: p.read_bytes() for p in before} == before
    assert not [p for p in (small_disk / "report").rglob("*") if ".tmp" in p.name]


