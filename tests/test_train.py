"""featpipe.train: heads on a cache -> run directories."""

import json

import numpy as np
import pytest

from featpipe.errors import FeatpipeError
from featpipe.heads import load_head, make_head
from featpipe.run_predictions import read_predictions
from featpipe.runs import is_complete, load_run
from featpipe.store import FeatureCache
from featpipe.train import open_for_training, parse_size, train_head
from heads_fixtures import real_cache, splits, synthetic_cache, write_cache


@pytest.fixture
def cache_path(tmp_path):
    return synthetic_cache(tmp_path, n_classes=3)


def _train(path, name, params=None, seed=0, **kwargs):
    with open_for_training(path, check_data=False) as cache:
        return train_head(cache, make_head(name, params, seed), kwargs.pop("runs_dir"), **kwargs)


def test_writes_a_complete_traceable_run(cache_path, tmp_path):
    result = _train(cache_path, "logreg", {"C": "0.01,1"}, runs_dir=tmp_path / "runs")
    assert result.run_dir == tmp_path / "runs" / "synthetic-0123456789abcdef-logreg" and not result.reused
    run = load_run(result.run_dir)
    info, metrics = run["run"], run["metrics"]
    assert run["history"] is None and not (result.run_dir / "history.json").exists()
    assert info["kind"] == "head" and info["path"] == "cached" and info["head"] == "logreg"
    with FeatureCache(cache_path) as cache:
        assert info["cache"] == {"path": str(cache_path.resolve()), "key": cache.key}
        assert info["dataset"]["classes"] == ["cat", "dog", "fox"] == cache.classes
    assert info["params"]["C"] == [0.01, 1.0] and info["seed"] == 0 and info["model_file"] == "model.joblib"
    assert info["weights_id"] == "none" and info["pooling"] == "avg" and info["streamed"] is False
    assert metrics["validation"]["n"] == 30 and metrics["test"]["n"] == 30 and metrics["test"]["accuracy"] > 0.9
    assert [g["params"] for g in metrics["selection"]["grid"]] == [{"C": 0.01}, {"C": 1.0}]
    timing = metrics["timing"]
    # 3 splits x 2 s of recorded parts, plus the assembly's share of each split
    assert 6.0 <= timing["extract_seconds"] < 7.0
    assert timing["extract_images_per_second"] == pytest.approx(120 / timing["extract_seconds"])
    assert timing["total_seconds"] == pytest.approx(timing["extract_seconds"] + timing["fit_seconds"] + timing["predict_seconds"])
    assert result.summary()["test_accuracy"] == metrics["test"]["accuracy"]
    # The saved head is the one that produced the test metrics.
    with FeatureCache(cache_path) as cache:
        proba = load_head(result.run_dir).predict_proba(cache.features("test"))
        assert (proba.argmax(1) == cache.labels("test")).mean() == metrics["test"]["accuracy"]
        # Per-image predictions, row by row, for the report's paired tests and mistakes gallery.
        found = read_predictions(result.run_dir, info)
        assert found["test"].paths == tuple(cache.paths("test"))
        np.testing.assert_array_equal(found["test"].labels, cache.labels("test"))
        np.testing.assert_allclose(found["test"].proba, proba, atol=1e-6)
        assert found["validation"].paths == tuple(cache.paths("validation"))


def test_dense_run_has_a_history_with_one_phase(cache_path, tmp_path):
    result = _train(cache_path, "dense", {"epochs": 3, "units": 8}, runs_dir=tmp_path)
    history = load_run(result.run_dir)["history"]
    assert history["phases"] == [{"name": "head", "start_epoch": 0}] and len(history["val_loss"]) == 3


def test_finished_runs_are_reused_unless_forced_or_changed(cache_path, tmp_path):
    first = _train(cache_path, "logreg", {"C": 1}, runs_dir=tmp_path)
    stamp = (first.run_dir / "run.json").stat().st_mtime_ns
    again = _train(cache_path, "logreg", {"C": 1}, runs_dir=tmp_path)
    assert again.reused and again.metrics == first.metrics
    assert (first.run_dir / "run.json").stat().st_mtime_ns == stamp
    with pytest.raises(FeatpipeError, match=r"different params, seed; pass --force"):
        _train(cache_path, "logreg", {"C": 2}, seed=1, runs_dir=tmp_path)
    forced = _train(cache_path, "logreg", {"C": 2}, runs_dir=tmp_path, force=True)
    assert not forced.reused and load_run(forced.run_dir)["run"]["params"]["C"] == [2.0]


def test_an_unfinished_run_is_redone(cache_path, tmp_path):
    run_dir = tmp_path / "synthetic-0123456789abcdef-logreg"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "running"}))
    result = _train(cache_path, "logreg", {"C": 1}, runs_dir=tmp_path)
    assert not result.reused and is_complete(run_dir)


def test_memory_limit_streams_dense_and_refuses_the_rbf_svm(cache_path, tmp_path):
    # 120 rows x 12 float32 features x 5 (stored + float64 copy + normalised copy)
    with pytest.raises(FeatpipeError, match=r"svm needs the features in memory: about 28.1 KiB .* 1.0 KiB; .*"
                                            r"use head logreg, linear-svm or dense"):  # Python: argument names
        _train(cache_path, "svm", runs_dir=tmp_path, max_memory=1024)
    result = _train(cache_path, "dense", {"epochs": 2, "units": 8}, runs_dir=tmp_path, max_memory=1024)
    assert load_run(result.run_dir)["run"]["streamed"] is True and result.metrics["test"]["n"] == 30


@pytest.mark.parametrize("name", ["logreg", "linear-svm"])
def test_linear_heads_stream_past_the_memory_limit_as_accurately_as_in_memory(name, tmp_path):
    # Overlapping classes, so accuracy is not 1.0 either way; rows sorted by class as extract writes them.
    data = splits(n_classes=3, dim=8, rows={"train": 1500, "validation": 600, "test": 600}, spread=6.0)
    data = {split: (X[np.argsort(y, kind="stable")], np.sort(y)) for split, (X, y) in data.items()}
    path = write_cache(tmp_path / "hard-0123456789abcdef.h5", data, ["cat", "dog", "fox"])
    in_memory = _train(path, name, runs_dir=tmp_path / "memory")
    streamed = _train(path, name, runs_dir=tmp_path / "streamed", max_memory=64 * 1024)
    info = load_run(streamed.run_dir)["run"]
    assert info["streamed"] is True and info["fit"]["solver"]["solver"] == "sgd"
    assert load_run(in_memory.run_dir)["run"]["fit"]["solver"]["solver"] in ("lbfgs", "liblinear")
    exact, sgd = in_memory.metrics["test"]["accuracy"], streamed.metrics["test"]["accuracy"]
    assert 0.6 < exact < 0.99 and abs(sgd - exact) <= 0.01
    best = [max(g["score"] for g in r.metrics["selection"]["grid"]) for r in (in_memory, streamed)]
    assert abs(best[0] - best[1]) <= 0.01  # the same C grid, selected on the same validation rows


def test_the_svm_approximation_is_recorded_in_the_run(cache_path, tmp_path):
    # Features fit under 60 KiB, an exact kernel on 60 + 30 rows does not: Nystroem features instead.
    result = _train(cache_path, "svm", {"n_components": 20}, runs_dir=tmp_path, max_memory=60_000)
    fit = load_run(result.run_dir)["run"]["fit"]
    assert fit["kernel"]["method"] == "nystroem" and fit["kernel"]["n_components"] == 20
    assert fit["validation"] == {"source": "given", "rows": 30}
    assert result.metrics["selection"]["kernel"] == fit["kernel"] and result.metrics["test"]["accuracy"] > 0.9


def test_a_cache_without_validation_is_refused_with_the_fix(tmp_path):
    path = synthetic_cache(tmp_path, without=("validation",))
    with pytest.raises(FeatpipeError, match=r"no validation split.*--val-fraction"):
        open_for_training(path, check_data=False)


def test_an_incomplete_cache_is_refused(cache_path):
    partial = cache_path.with_name("other-0000.h5")
    (partial.parent / f"{partial.name}.partial").mkdir()
    with pytest.raises(FeatpipeError, match=r"no finished cache file .* interrupted"):
        open_for_training(partial, check_data=False)


def test_missing_dataset_folder_is_refused_unless_unchecked(cache_path):
    with pytest.raises(FeatpipeError, match=r"dataset folder not found.*--no-data-check"):
        open_for_training(cache_path)
    open_for_training(cache_path, check_data=False).close()


@pytest.mark.parametrize("change", ["add", "modify"])
def test_a_changed_dataset_is_refused(tmp_path, tiny_model_file, change):
    path = real_cache(tmp_path, tiny_model_file)
    open_for_training(path).close()  # unchanged: accepted
    image = tmp_path / "data" / "train" / "dog" / "dog.0.jpg"
    if change == "add":
        image.with_name("new.jpg").write_bytes(image.read_bytes())
    else:
        image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(FeatpipeError, match=r"changed since .* was extracted.*--no-data-check"):
        open_for_training(path)


def test_parse_size():
    assert parse_size("512") == 512 and parse_size("4k") == 4096 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size(" 2 MB") == 2 * 2**20
    with pytest.raises(FeatpipeError, match="bad memory size"):
        parse_size("lots")


def test_a_run_being_written_by_another_process_is_one_line_and_left_alone(cache_path, tmp_path):
    """Issue 20, item 8: two trainings of one head at once; the second is refused at once, a finished run is
    still reused without the lock (and without a writable runs dir)."""
    from featpipe.runs import run_lock

    run_dir = tmp_path / "runs" / "synthetic-0123456789abcdef-logreg"
    with run_lock(run_dir):  # as another process holding it would: flock is per open file
        with pytest.raises(FeatpipeError, match=f"^another featpipe process is writing run directory {run_dir} "):
            _train(cache_path, "logreg", runs_dir=tmp_path / "runs")
    assert not run_dir.exists()
    first = _train(cache_path, "logreg", runs_dir=tmp_path / "runs")
    with run_lock(run_dir):
        assert _train(cache_path, "logreg", runs_dir=tmp_path / "runs").reused
        with pytest.raises(FeatpipeError, match="^another featpipe process is writing run directory"):
            _train(cache_path, "logreg", runs_dir=tmp_path / "runs", force=True)
    assert is_complete(first.run_dir) and load_run(first.run_dir)["metrics"] == first.metrics
