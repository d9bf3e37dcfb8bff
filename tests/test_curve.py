"""featpipe.curve and `featpipe curve`: label-efficiency curves on cached features."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from featpipe.cli import main
from featpipe.curve import (curve_dir, curves_for_report, draw, interval, learning_curve, parse_shots,
                            summary_sentence)
from featpipe.errors import FeatpipeError
from featpipe.heads import make_head
from featpipe.runs import find_runs
from featpipe.store import FeatureCache
from heads_fixtures import splits, write_cache


@pytest.fixture
def cache_path(tmp_path):
    data = splits(n_classes=3, spread=3.0, rows={"train": 150, "validation": 60, "test": 90})
    return write_cache(tmp_path / "blobs-0123456789abcdef.h5", data, ["cat", "dog", "fox"])


def test_draws_are_stratified_seeded_and_capped_at_a_class_size():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    rows = draw(labels, 4, repeat=0, seed=0)
    assert np.bincount(labels[rows]).tolist() == [4, 3, 4] and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, draw(labels, 4, repeat=0, seed=0))  # the same for every head
    assert not np.array_equal(rows, draw(labels, 4, repeat=1, seed=0))
    np.testing.assert_array_equal(draw(labels, None, repeat=3, seed=0), np.arange(20))


def test_shots_parse_sorted_with_all_last_and_bad_values_are_errors():
    assert parse_shots("16, all,1,2,2") == [1, 2, 16, None]
    for bad in ("0", "x", "1,,2", "-1"):
        with pytest.raises(FeatpipeError, match="bad --shots value"):
            parse_shots(bad)


def test_interval_is_the_t_interval_over_repeats():
    values = [0.8, 0.85, 0.83, 0.9, 0.86]
    mean, sd, ci = interval(values)
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(0.848) and sd == pytest.approx(np.std(values, ddof=1))
    np.testing.assert_allclose(ci, expected)
    assert interval([0.7]) == (0.7, 0.0, None)
    # Two repeats: t(0.975, 1) = 12.7, the interval passes 0 and 1 and is clipped to accuracies.
    assert interval([0.9, 1.0])[2] == [pytest.approx(0.95 - 0.635, abs=1e-3), 1.0]
    assert interval([0.0, 0.1])[2] == [0.0, pytest.approx(0.05 + 0.635, abs=1e-3)]


def test_summary_sentence_names_the_first_level_within_a_point_of_all_data():
    points = [{"head": "logreg", "shots": s, "mean": m} for s, m in
              [("1", 0.6), ("8", 0.89), ("64", 0.905), ("all", 0.912)]]
    assert summary_sentence(points, "logreg") == (
        "logreg reaches within 1 point of its all-data accuracy (0.912) from 64 images per class (0.905)")
    assert summary_sentence(points[:2] + points[3:], "logreg").startswith(
        "logreg stays more than 1 point under its all-data accuracy (0.912) up to 8 images per class")
    assert summary_sentence([points[0], points[3]], "logreg").endswith("up to 1 image per class (0.600)")


def test_curve_trains_every_head_on_the_same_draws_and_resumes(cache_path, tmp_path):
    heads = [make_head("logreg", {"C": "0.1,1"}), make_head("knn")]
    with FeatureCache(cache_path) as cache:
        result = learning_curve(cache, heads, [1, 4, None], repeats=3, runs_dir=tmp_path / "runs")
        full = make_head("logreg", {"C": "0.1,1"}).fit(cache.features("train"), cache.labels("train"),
                                                       X_val=cache.features("validation"),
                                                       y_val=cache.labels("validation"))
        full_accuracy = full.score(cache.features("test"), cache.labels("test"))
    expected_dir = tmp_path / "runs" / "curves" / "blobs-0123456789abcdef"
    assert result.directory == curve_dir(cache_path, tmp_path / "runs") == expected_dir
    assert [(p["head"], p["shots"], p["repeats"]) for p in result.points] == [
        (h, s, 3) for h in ("logreg", "knn") for s in ("1", "4", "all")]
    assert result.trained == 18 and result.reused == 0
    saved = json.loads((result.directory / "curve.json").read_text())
    trials = saved["trials"]
    # Both heads saw the same rows per (shots, repeat); the full split is 150 rows.
    assert {(t["shots"], t["repeat"], t["train_rows"]) for t in trials if t["head"] == "logreg"} == {
        (t["shots"], t["repeat"], t["train_rows"]) for t in trials if t["head"] == "knn"}
    assert {t["train_rows"] for t in trials} == {3, 12, 150}
    # At "all" both heads ignore their seed: fitted once, the result recorded for every repeat.
    copied = [t for t in trials if t.get("same_as_repeat") == 0]
    assert sorted((t["head"], t["repeat"]) for t in copied) == [("knn", 1), ("knn", 2), ("logreg", 1), ("logreg", 2)]
    # The all-data logreg point is what logreg trained on the whole split (as `featpipe train` does) scores on
    # test; lbfgs is deterministic, so every repeat gives the same.
    point = next(p for p in result.points if p["head"] == "logreg" and p["shots"] == "all")
    assert point["mean"] == full_accuracy and point["sd"] == 0.0
    with open(result.directory / "curve.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert (result.directory / "curve.png").stat().st_size > 1000
    assert saved["summary"] == result.sentences and saved["protocol"]["interval"].startswith("95% t-interval")
    # A rerun finds every trial; one more repeat trains only the new ones.
    with FeatureCache(cache_path) as cache:
        again = learning_curve(cache, heads, [1, 4, None], repeats=3, runs_dir=tmp_path / "runs")
        more = learning_curve(cache, heads, [1, 4, None], repeats=4, runs_dir=tmp_path / "runs")
    assert (again.trained, again.reused) == (0, 18) and again.points == result.points
    assert (more.trained, more.reused) == (6, 18)
    # The report's reader finds it by cache file stem.
    (found,) = curves_for_report(tmp_path / "runs", ["blobs-0123456789abcdef"])
    assert found["points"] == more.points and found["png"].is_file()
    assert curves_for_report(tmp_path / "runs", ["other"]) == []
    # Beside the runs, but not a run: compare does not list it as an unfinished one.
    finished, unfinished = find_runs([tmp_path / "runs"])
    assert not [p for p in finished + unfinished if "curves" in p.parts]


def test_a_curve_of_another_cache_is_not_mixed_in(cache_path, tmp_path):
    runs = tmp_path / "runs"
    with FeatureCache(cache_path) as cache:
        learning_curve(cache, [make_head("knn")], [1], repeats=1, runs_dir=runs)
    curve_file = curve_dir(cache_path, runs) / "curve.json"
    saved = json.loads(curve_file.read_text())
    saved["cache"]["key"] = "someothercachekey"
    curve_file.write_text(json.dumps(saved))
    with FeatureCache(cache_path) as cache:
        with pytest.raises(FeatpipeError, match="holds a curve of another cache"):
            learning_curve(cache, [make_head("knn")], [1], repeats=1, runs_dir=runs)
        assert learning_curve(cache, [make_head("knn")], [1], repeats=1, runs_dir=runs, force=True).trained == 1


def test_cli_prints_points_as_the_last_json_line(cache_path, tmp_path):
    args = ["curve", str(cache_path), "--head", "logreg", "--head", "knn", "--shots", "2,all", "--repeats", "2",
            "--param", "C=1", "--runs-dir", str(tmp_path / "runs"), "--no-data-check", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(p["head"], p["shots"], p["repeats"]) for p in last["points"]] == [
        ("logreg", "2", 2), ("logreg", "all", 2), ("knn", "2", 2), ("knn", "all", 2)]
    assert all(set(p) >= {"head", "shots", "repeats", "mean", "ci"} for p in last["points"])
    assert "reaches within" in result.stderr or "stays more than" in result.stderr
    bad = CliRunner().invoke(main, [*args[:6], "--shots", "1,zero"])
    assert bad.exit_code == 1 and "bad --shots value 'zero'" in bad.stderr


@pytest.mark.parametrize("name, params", [("logreg", {}), ("knn", {}), ("svm", {"kernel": "exact"}),
                                          ("logreg", {"solver": "sgd"}), ("svm", {"kernel": "nystroem"})])
def test_a_head_that_says_it_ignores_its_seed_does(name, params):
    data = splits(n_classes=3, spread=3.0)
    fits = [make_head(name, {**params, "n_components": 20} if name == "svm" else params, seed=seed).fit(
        *data["train"], X_val=data["validation"][0], y_val=data["validation"][1]) for seed in (0, 1)]
    X = data["test"][0]
    same = np.array_equal(fits[0].predict_proba(X), fits[1].predict_proba(X))
    assert fits[0].seed_independent() == (name == "knn" or "solver" not in params and "nystroem" not in str(params))
    if fits[0].seed_independent():
        assert same
    else:
        assert not same  # the seed matters, so the curve fits every repeat
