import json

from featpipe.curve import curve_points, summary_sentence
from featpipe.report.build import write_report
from featpipe.runs import write_json

from report_fixtures import make_run


def _curve(runs_dir, stem, head="logreg"):
    trials = [{"head": head, "shots": shots, "repeat": r, "test_accuracy": acc + 0.01 * r, "train_rows": rows}
              for shots, acc, rows in ((1, 0.6, 2), (4, 0.7, 8), (None, 0.8, 80)) for r in range(3)]
    points = curve_points(trials)
    (runs_dir / "curves" / stem).mkdir(parents=True)
    write_json(runs_dir / "curves" / stem / "curve.json",
               {"cache": {"key": "abc123"}, "protocol": {"repeats": 3}, "trials": trials, "points": points,
                "summary": [summary_sentence(points, head)]})


def test_a_curve_beside_the_runs_of_its_cache_gets_a_section_and_json(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "a-logreg", head="logreg", backbone="keras:MobileNet(alpha=0.25)")
    make_run(runs, "a-svm", head="svm", backbone="keras:MobileNet(alpha=0.25)", seed=1)
    _curve(runs, "cache")
    _curve(runs, "another-cache", head="knn")  # a cache no reported run was trained on: not shown
    out = write_report([runs], tmp_path / "report")
    summary = json.loads(out["summary_json"].read_text())
    (curve,) = summary["curves"]
    assert curve["cache"] == "cache" and curve["title"].startswith("MobileNet α0.25")
    assert [(p["shots"], p["repeats"]) for p in curve["points"]] == [("1", 3), ("4", 3), ("all", 3)]
    html = out["html"].read_text()
    assert 'id="curves"' in html and "Label efficiency" in html and curve["summary"][0] in html
    assert (tmp_path / "report" / "plots" / "curve_1.png").stat().st_size > 0
    assert "curve_1.png" in out["markdown"].read_text()


def test_no_curve_no_section(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "a-logreg")
    out = write_report([runs], tmp_path / "report")
    assert json.loads(out["summary_json"].read_text())["curves"] == []
    assert 'id="curves"' not in out["html"].read_text()
