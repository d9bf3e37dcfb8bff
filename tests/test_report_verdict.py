"""The verdict: best on validation, ties by the paired test, one verdict per dataset, the same numbers everywhere."""

import json

import pytest

from featpipe.report import write_report
from featpipe.report.collect import collect_runs
from featpipe.report.statistics import mcnemar_exact, paired_outcomes
from featpipe.report.verdict import make_verdict, make_verdicts
from featpipe.runs import write_json
from report_fixtures import make_run


def _verdict(root):
    return make_verdict(collect_runs([root])[0])


def test_best_is_picked_on_validation_and_end_to_end_is_costed(tmp_path):
    # The highest *test* accuracy is a decoy: selection must be on validation.
    make_run(tmp_path, "decoy", val=0.70, test=0.95, extract=10, fit=2, seed=1)
    make_run(tmp_path, "cached-best", val=0.80, test=0.75, extract=10, fit=2, seed=2)
    make_run(tmp_path, "e2e-weak", path="end-to-end", val=0.75, test=0.9, fit=500, seed=3)
    make_run(tmp_path, "e2e-best", path="end-to-end", val=0.85, test=0.80, fit=300, seed=4)
    verdict = _verdict(tmp_path)
    assert verdict["best"] == "e2e-best" and verdict["best_run"]["name"] == "e2e-best"
    assert verdict["best_cached"]["name"] == "cached-best"
    comparison = verdict["end_to_end_vs_cached"]
    assert comparison["test_accuracy_delta"] == pytest.approx(0.80 - 0.75)
    assert comparison["compute_ratio"] == pytest.approx(300 / 12)
    assert comparison["test"] == "mcnemar-exact" and comparison["beyond_noise"] is False  # 40 images: noise
    line = next(line for line in verdict["lines"] if line.startswith("End-to-end"))
    assert "gained 5.0 points" in line and "within noise" in line and "25.0× the compute" in line


def test_heads_within_half_a_point_on_2000_images_are_ties_and_a_clearly_worse_run_is_not(tmp_path):
    make_run(tmp_path, "logreg", head="logreg", val=0.96, test=0.955, n_test=2000, seed=1)
    make_run(tmp_path, "svm", head="svm", val=0.95, test=0.952, n_test=2000, seed=2)
    make_run(tmp_path, "dense", head="dense", val=0.94, test=0.951, n_test=2000, seed=3)
    make_run(tmp_path, "e2e", path="end-to-end", val=0.93, test=0.90, n_test=2000, seed=4)
    runs, _ = collect_runs([tmp_path])
    verdict = make_verdict(runs)
    assert verdict["best"] == "logreg" and verdict["test"] == "mcnemar-exact"
    assert sorted(verdict["ties"]) == ["dense", "svm"]
    by_name = {c["name"]: c for c in verdict["comparisons"]}
    assert by_name["e2e"]["tie"] is False and by_name["e2e"]["p_holm"] < 0.05
    # The p-values are McNemar's on the recorded predictions, Holm-adjusted over the three comparisons.
    found = {r["row"]["name"]: r["predictions"]["test"] for r in runs}
    raw = mcnemar_exact(*paired_outcomes(found["logreg"], found["svm"])).p_value
    assert by_name["svm"]["p_value"] == pytest.approx(raw)
    assert by_name["svm"]["p_holm"] >= raw
    ci = by_name["svm"]["test_accuracy_ci"]
    assert ci[1] - ci[0] == pytest.approx(0.019, abs=0.002)  # ±0.9 points on 2,000 images
    assert any("are within noise of each other" in line and "svm" in line and "dense" in line
               for line in verdict["lines"])
    assert any(line.startswith("End-to-end") and "beyond noise" in line for line in verdict["lines"])


def test_runs_without_predictions_keep_intervals_and_say_why_they_are_not_tested(tmp_path):
    make_run(tmp_path, "new", val=0.9, test=0.9, seed=1)
    make_run(tmp_path, "old", val=0.8, test=0.85, seed=2, predictions=False)
    verdict = _verdict(tmp_path)
    assert verdict["ties"] == [] and verdict["comparisons"] == [] and verdict["test"] is None
    assert [u["name"] for u in verdict["untested"]] == ["old"]
    assert any("no per-image predictions" in line and "retrain" in line for line in verdict["lines"])


def test_a_best_run_without_predictions_tests_nothing(tmp_path):
    make_run(tmp_path, "old-best", val=0.95, seed=1, predictions=False)
    make_run(tmp_path, "new", val=0.8, seed=2)
    verdict = _verdict(tmp_path)
    assert verdict["test"] is None and verdict["untested"][0]["reason"].startswith("the best run")


def test_tampered_predictions_are_a_reason_not_a_crash(tmp_path):
    make_run(tmp_path, "best", val=0.95, seed=1)
    run = make_run(tmp_path, "other", val=0.8, seed=2)
    (run / "predictions.npz").write_bytes(b"not a zip")
    verdict = _verdict(tmp_path)
    assert "does not match the SHA-256" in verdict["untested"][0]["reason"]


def test_each_dataset_gets_its_own_verdict(tmp_path):
    make_run(tmp_path / "runs", "cats-logreg", val=0.9, test=0.9, dataset="cats", seed=1)
    make_run(tmp_path / "runs", "cats-svm", head="svm", val=0.85, test=0.88, dataset="cats", seed=2)
    make_run(tmp_path / "runs", "flowers-logreg", val=0.99, test=0.7, classes=("a", "b", "c"), dataset="flowers",
             seed=3)
    runs, _ = collect_runs([tmp_path / "runs"])
    verdicts = make_verdicts(runs)
    assert [(v["dataset"]["name"], v["best"]) for v in verdicts] == [("flowers", "flowers-logreg"),
                                                                     ("cats", "cats-logreg")]
    assert verdicts[1]["ties"] == ["cats-svm"] and verdicts[0]["comparisons"] == []
    paths = write_report([tmp_path / "runs"], tmp_path / "out")
    summary = json.loads(paths["summary_json"].read_text())
    assert summary["verdict"] is None and len(summary["verdicts"]) == 2
    assert {v["dataset"]["fingerprint"] for v in summary["verdicts"]} == {"f00d-cats", "f00d-flowers"}
    assert [r["rank"] for r in summary["runs"]] == [1, 1, 2]  # ranked within each dataset
    assert [r["dataset"] for r in summary["runs"]] == ["flowers", "cats", "cats"]
    page = paths["html"].read_text()
    assert page.count("<h3>Dataset flowers</h3>") == 2  # its verdict and its mistakes
    assert "<th>dataset</th>" in page
    for verdict in summary["verdicts"]:
        assert verdict["lines"][0] in page.replace("&#x27;", "'")


def test_a_one_class_validation_split_is_flagged(tmp_path):
    run = make_run(tmp_path, "lopsided", val=0.9, seed=1)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["validation"]["per_class"]["dog"]["support"] = 0
    write_json(run / "metrics.json", metrics)
    verdict = _verdict(tmp_path)
    assert any("holds one class only (cat)" in line for line in verdict["warnings"])
    assert verdict["warnings"][0] in verdict["lines"]


def test_pretrained_vs_random_uses_the_same_head_on_a_random_copy(tmp_path):
    make_run(tmp_path, "pre-logreg", head="logreg", val=0.90, test=0.90, seed=1)
    make_run(tmp_path, "pre-svm", head="svm", val=0.80, test=0.95, seed=2)
    make_run(tmp_path, "rand-logreg", head="logreg", val=0.40, test=0.35, pretrained=False, seed=3)
    make_run(tmp_path, "rand-svm", head="svm", val=0.60, test=0.55, pretrained=False, seed=4)
    verdict = _verdict(tmp_path)
    versus = verdict["pretrained_vs_random"]
    assert (versus["pretrained"]["name"], versus["random"]["name"]) == ("pre-logreg", "rand-logreg")
    assert versus["test_accuracy_delta"] == pytest.approx(0.90 - 0.35)
    line = next(line for line in verdict["lines"] if line.startswith("Pretrained vs random"))
    assert "90.0% [76.9, 96.0]" in line and "35.0% [22.1, 50.5]" in line and "+55.0 points" in line


@pytest.mark.parametrize("only", ["cached", "end-to-end"])
def test_verdict_without_the_other_path(tmp_path, only):
    make_run(tmp_path, "one", path=only, val=0.8, test=0.7)
    verdict = _verdict(tmp_path)
    assert verdict["end_to_end_vs_cached"] is None and verdict["ties"] == []
    other = "end-to-end" if only == "cached" else "cached"
    assert f"No {other} run, so no end-to-end vs cached comparison." in verdict["lines"]


def test_zero_second_cached_run_gives_no_ratio(tmp_path):
    make_run(tmp_path, "free", val=0.8, test=0.7, total=0.0)
    make_run(tmp_path, "e2e", path="end-to-end", val=0.7, test=0.7, fit=5)
    verdict = _verdict(tmp_path)
    assert verdict["end_to_end_vs_cached"]["compute_ratio"] is None
    assert any("undefined compute ratio" in line for line in verdict["lines"])


def test_end_to_end_against_the_best_uses_the_verdicts_adjusted_p_value(tmp_path):
    # 2,000 images, end-to-end 1.5 points better: its own p-value is under 5%, Holm's over it; the page must not
    # call the pair a tie in one line and beyond noise in the next.
    for i, head in enumerate(["logreg", "svm", "dense", "knn"]):
        make_run(tmp_path, head, head=head, val=0.9 - i / 50, test=0.955 - i / 400, n_test=2000, seed=i)
    make_run(tmp_path, "ft", path="end-to-end", val=0.85, test=0.97, n_test=2000, seed=9, fit=400)
    verdict = _verdict(tmp_path)
    comparison = verdict["end_to_end_vs_cached"]
    ft = next(c for c in verdict["comparisons"] if c["name"] == "ft")
    assert comparison["p_value"] == pytest.approx(ft["p_value"]) and comparison["p_decides"] == ft["p_holm"]
    assert comparison["beyond_noise"] is (not ft["tie"])
    line = next(line for line in verdict["lines"] if line.startswith("End-to-end"))
    assert ("within noise" in line) is ft["tie"] and "Holm-adjusted" in line
