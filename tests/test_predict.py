"""featpipe.prediction: classify image files with a finished run; export a run as one Keras model."""

import csv
import os
import shutil

import keras
import numpy as np
import pytest

from featpipe.errors import FeatpipeError
from featpipe.heads import load_head, make_head
from featpipe.model_parts import all_layers
from featpipe.pipeline import indexed_images
from featpipe.preprocessing import preprocessing_config
from featpipe.prediction import export, image_files, predict
from featpipe.runs import RunRecord, finish_run, load_run, save_model_files, write_json
from featpipe.store import FeatureCache
from featpipe.train import open_for_training, train_head
from heads_fixtures import real_cache
from plain_keras import outputs_without_featpipe
from hostile_fixtures import small_disk  # noqa: F401  (a fixture)


def _make_runs(root, model_file, pooling, heads):
    """A tiny real cache (generated images through a tiny saved base) and a run per head on it."""
    path = real_cache(root, model_file, pooling=pooling)
    with open_for_training(path) as cache:
        for name, params in heads.items():
            train_head(cache, make_head(name, params), root / "runs")
    return {"root": root, "cache": path, **{name: root / "runs" / f"{path.stem}-{name}" for name in heads}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_file):
    heads = {"logreg": {}, "svm": {}, "dense": {"epochs": 3, "units": 8}, "linear-svm": {}, "knn": {}}
    return _make_runs(tmp_path_factory.mktemp("predict"), tiny_model_file, "avg", heads)


@pytest.fixture(scope="module")
def images(runs):
    """The test split's folder plus one corrupt file."""
    bad = runs["root"] / "extra" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    return [runs["root"] / "data" / "test", bad]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cached_test_probabilities(runs, run_dir):
    """{absolute image path: probabilities} from the run's head on the cached test features."""
    with FeatureCache(runs["cache"]) as cache:
        proba = load_head(run_dir).predict_proba(cache.features("test"))
        return {str(runs["root"] / "data" / p): row for p, row in zip(cache.paths("test"), proba)}


@pytest.mark.slow
@pytest.mark.parametrize("head", ["logreg", "svm", "dense", "knn"])
def test_csv_rows_match_the_head_on_cached_features(runs, images, tmp_path, head):
    result = predict(runs[head], images, tmp_path / "p.csv")
    rows = _read(tmp_path / "p.csv")
    assert list(rows[0]) == ["path", "predicted_class", "prob_cat", "prob_dog", "error"]
    assert result.rows == len(rows) == 9 and result.errors == 1
    error = rows[-1]
    assert error["path"].endswith("broken.jpg") and error["predicted_class"] == error["prob_cat"] == ""
    assert error["error"]
    expected = _cached_test_probabilities(runs, runs[head])
    assert sorted(r["path"] for r in rows[:-1]) == sorted(expected)
    for row in rows[:-1]:
        proba = [float(row["prob_cat"]), float(row["prob_dog"])]
        np.testing.assert_allclose(proba, expected[row["path"]], atol=1e-5)
        assert row["predicted_class"] == ["cat", "dog"][int(np.argmax(proba))] and row["error"] == ""


@pytest.mark.slow
def test_spatial_features_go_through_the_same_pooling_at_predict_time(tmp_path, tiny_model_file):
    spatial = _make_runs(tmp_path, tiny_model_file, "none", {"dense": {"epochs": 2, "units": 8}, "logreg": {}})
    for head in ("dense", "logreg"):
        predict(spatial[head], [tmp_path / "data" / "test"], tmp_path / "p.csv")
        expected = _cached_test_probabilities(spatial, spatial[head])
        for row in _read(tmp_path / "p.csv"):
            np.testing.assert_allclose([float(row["prob_cat"]), float(row["prob_dog"])], expected[row["path"]], atol=1e-5)


def _exported_and_predicted(runs, images, tmp_path, head):
    """(the exported model, held-out images as the tensor predict reads, predict's probabilities for them)."""
    out = export(runs[head], tmp_path / "model.keras")
    predict(runs[head], images, tmp_path / "p.csv")
    rows = _read(tmp_path / "p.csv")[:-1]
    pixels = np.stack([x for x, _ in indexed_images([r["path"] for r in rows], (32, 32)).as_numpy_iterator()])
    return out, pixels, np.array([[float(r["prob_cat"]), float(r["prob_dog"])] for r in rows])


BUILT_IN = {"InputLayer", "Functional", "Dense", "Dropout", "Normalization", "UnitNormalization", "Multiply", "Add",
            "Subtract", "Rescaling", "ReLU", "Activation", "Softmax", "GlobalMaxPooling1D", "GlobalAveragePooling2D",
            "Reshape", "Conv2D", "BatchNormalization", "Flatten", "Identity", "Cast"}


@pytest.mark.parametrize("head", ["logreg", *(pytest.param(h, marks=pytest.mark.slow)
                                               for h in ("dense", "linear-svm", "svm", "knn"))])
def test_every_head_exports_as_one_model_with_the_same_probabilities_as_predict(runs, images, tmp_path, head):
    out, pixels, expected = _exported_and_predicted(runs, images, tmp_path, head)
    model = keras.saving.load_model(out)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(pixels)), expected, atol=1e-5)
    kinds = {type(layer).__name__ for layer in all_layers(model)}
    assert kinds <= BUILT_IN and all(type(layer).__module__.startswith("keras.") for layer in all_layers(model))


@pytest.mark.slow
@pytest.mark.parametrize("head", ["dense", "logreg", "linear-svm", "svm", "knn"])
def test_exports_load_with_plain_keras_without_featpipe(runs, images, tmp_path, head):
    out, pixels, expected = _exported_and_predicted(runs, images, tmp_path, head)
    # A server without featpipe loads it with plain keras.models.load_model and gets the same answers.
    np.testing.assert_allclose(outputs_without_featpipe(out, pixels, tmp_path), expected, atol=1e-5)


def test_an_export_that_disagrees_with_predict_is_not_written(runs, tmp_path, monkeypatch):
    import featpipe.prediction as predict_module

    monkeypatch.setattr(predict_module, "EXPORT_TOLERANCE", -1.0)  # no difference is small enough
    with pytest.raises(FeatpipeError, match=r"differ from predict's by .*; not written"):
        export(runs["knn"], tmp_path / "model.keras")
    assert not (tmp_path / "model.keras").exists()


def test_bad_names_cannot_be_exported(runs, tmp_path):
    with pytest.raises(FeatpipeError, match=r"must end in \.keras"):
        export(runs["dense"], tmp_path / "model.h5")
    assert not list(tmp_path.iterdir())


def test_a_backbone_whose_weights_changed_is_refused(runs, images, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["logreg"], run_dir)
    info = load_run(run_dir)["run"]
    write_json(run_dir / "run.json", {**info, "weights_id": "sha256:0000"})
    with pytest.raises(FeatpipeError, match=r"now loads weights sha256:\w+, not the sha256:0000"):
        predict(run_dir, images, tmp_path / "p.csv")


def _finetune_run(run_dir, units):
    """A finetune-style run: one model, 0-255 image in, sigmoid (1 unit) or softmax probabilities out."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(units, activation="sigmoid" if units == 1 else "softmax")(x)
    model = keras.Model(inputs, outputs)
    digests = save_model_files(run_dir, lambda folder: model.save(folder / "model.keras"))
    classes = ["cat", "dog"] if units == 1 else ["cat", "dog", "fox"]
    finish_run(run_dir, RunRecord(
        name="ft", kind="finetune", path="end-to-end", head="finetune", backbone="synthetic", weights="none",
        pretrained=False, image_size=[32, 32], pooling="avg", crop_to_aspect_ratio=False,
        preprocessing=preprocessing_config("scale_offset", [1 / 255] * 3, [0.0] * 3),  # the model's Rescaling
        cache=None, dataset={"classes": classes}, params={}, seed=0, versions={}, model_file="model.keras",
    ), {}, model_digests=digests)
    return model


@pytest.mark.parametrize("units", [1, 3])
def test_finetune_runs_predict_and_export(runs, tmp_path, units):
    model = _finetune_run(tmp_path / "ft", units)
    test_dir = runs["root"] / "data" / "test"
    predict(tmp_path / "ft", [test_dir], tmp_path / "p.csv")
    rows = _read(tmp_path / "p.csv")
    pixels = np.stack([x for x, _ in indexed_images([r["path"] for r in rows], (32, 32)).as_numpy_iterator()])
    out = keras.ops.convert_to_numpy(model(pixels))
    expected = np.hstack([1 - out, out]) if units == 1 else out
    got = np.array([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    exported = export(tmp_path / "ft", tmp_path / "served.keras")
    assert exported.read_bytes() == (tmp_path / "ft" / "model.keras").read_bytes()


def test_image_files_walks_folders_and_keeps_named_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/2.png", "a/1.JPG", "a/b/3.gif", "a/notes.txt", "a/.hidden.jpg", "named.dat"):
        (tmp_path / name).write_bytes(b"")
    files = image_files([tmp_path / "a", tmp_path / "named.dat"])
    assert [f.replace(str(tmp_path), "") for f in files] == ["/a/1.JPG", "/a/2.png", "/a/b/3.gif", "/named.dat"]
    with pytest.raises(FeatpipeError, match="no such file or folder"):
        image_files([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatpipeError, match="no image files in"):
        image_files([tmp_path / "empty"])


# --- hostile run directories and outputs (issue 9) --------------------------------------------------------


def _poisoned_copy(runs, tmp_path, marker):
    """A copy of the logreg run whose model.joblib was replaced by a pickle that creates `marker`."""
    import joblib

    from hostile_fixtures import Evil

    run_dir = tmp_path / "poisoned"
    shutil.copytree(runs["logreg"], run_dir)
    joblib.dump(Evil(marker), run_dir / "model.joblib")
    return run_dir


def test_the_poison_is_real(tmp_path):
    """The payload of the tests below does run when unpickled (so their 'not created' means something)."""
    import joblib

    from hostile_fixtures import Evil

    joblib.dump(Evil(tmp_path / "ran"), tmp_path / "evil.joblib")
    joblib.load(tmp_path / "evil.joblib")
    assert (tmp_path / "ran").exists()


def test_a_swapped_pickle_is_refused_without_unpickling(runs, images, tmp_path):
    from featpipe.report.collect import collect_runs

    marker = tmp_path / "ran"
    run_dir = _poisoned_copy(runs, tmp_path, marker)
    (tmp_path / "p.csv").write_text("previous")
    with pytest.raises(FeatpipeError, match="does not match the SHA-256 featpipe recorded"):
        predict(run_dir, images, tmp_path / "p.csv")
    with pytest.raises(FeatpipeError, match="does not match"):
        export(run_dir, tmp_path / "m.keras")
    found, skipped = collect_runs([run_dir])
    assert not found and "does not match" in skipped[0]["reason"]
    assert not marker.exists() and (tmp_path / "p.csv").read_text() == "previous"


def test_reusing_a_poisoned_finished_run_is_refused(runs, tmp_path):
    marker = tmp_path / "ran"
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    shutil.move(_poisoned_copy(runs, tmp_path, marker), runs_dir / runs["logreg"].name)
    with open_for_training(runs["cache"]) as cache:
        with pytest.raises(FeatpipeError, match="does not match"):
            train_head(cache, make_head("logreg"), runs_dir)
    assert not marker.exists()


def test_cli_predict_on_a_poisoned_run_is_one_line_exit_1(runs, images, tmp_path):
    from click.testing import CliRunner

    from featpipe.cli import main

    marker = tmp_path / "ran"
    run_dir = _poisoned_copy(runs, tmp_path, marker)
    result = CliRunner().invoke(main, ["predict", str(run_dir), *map(str, images), "-o", str(tmp_path / "p.csv")])
    assert result.exit_code == 1 and not marker.exists()
    assert result.output.count("\n") == 1 and "does not match" in result.output


def _damage(run_dir, how):
    info = load_run(run_dir)["run"]
    if how == "no digest":
        write_json(run_dir / "run.json", {k: v for k, v in info.items() if k != "model_sha256"})
    elif how == "truncated model":
        data = (run_dir / "model.keras").read_bytes()
        (run_dir / "model.keras").write_bytes(data[: len(data) // 2])
    elif how == "missing model":
        (run_dir / "model.keras").unlink()
    elif how == "run.json fields":
        write_json(run_dir / "run.json", {**info, "dataset": "x", "image_size": "big", "kind": 3})
    elif how == "run.json not an object":
        write_json(run_dir / "run.json", [1, 2])
    elif how == "run.json binary":
        (run_dir / "run.json").write_bytes(b"\xff\xfe\x00garbage")
    elif how == "metrics.json":
        (run_dir / "metrics.json").write_text('{"test": ')
    elif how == "digest path escapes":
        write_json(run_dir / "run.json", {**info, "model_sha256": {**info["model_sha256"], "../x": "0"}})


@pytest.mark.parametrize("how, message", [
    ("no digest", "records no SHA-256 of its model file"),
    ("truncated model", "does not match the SHA-256"),
    ("missing model", "model file missing"),
    ("run.json fields", "is damaged: missing or bad kind, image_size, dataset"),
    ("run.json not an object", "not a finished run"),
    ("run.json binary", "not a finished run"),
    ("metrics.json", "unreadable JSON in .*metrics.json"),
    ("digest path escapes", "outside the run directory"),
])
def test_damaged_runs_are_one_line_errors(runs, images, tmp_path, how, message):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["dense"], run_dir)
    _damage(run_dir, how)
    with pytest.raises(FeatpipeError, match=message):
        predict(run_dir, images, tmp_path / "p.csv")


def test_unwritable_outputs_fail_before_any_work(runs, images, tmp_path):
    with pytest.raises(FeatpipeError, match="no such directory: /nonexistent/dir"):
        predict(runs["logreg"], images, "/nonexistent/dir/x.csv")
    with pytest.raises(FeatpipeError, match="no such directory"):
        export(runs["dense"], "/nonexistent/dir/x.keras")


def test_full_disk_keeps_the_previous_outputs(runs, images, small_disk):
    from hostile_fixtures import fill

    (small_disk / "p.csv").write_text("previous")
    (small_disk / "m.keras").write_text("previous")
    fill(small_disk)
    with pytest.raises(FeatpipeError, match=f"no space left on device writing {small_disk / 'm.keras'}"):
        export(runs["dense"], small_disk / "m.keras")
    # p.csv is tiny: fill the last bytes too
    with pytest.raises(FeatpipeError, match=f"no space left on device writing {small_disk / 'p.csv'}"):
        predict(runs["logreg"], images, small_disk / "p.csv")
    assert (small_disk / "p.csv").read_text() == "previous" and (small_disk / "m.keras").read_text() == "previous"
    assert sorted(os.listdir(small_disk)) == ["filler", "m.keras", "p.csv"]


def test_csv_cells_cannot_be_formulas(runs, images, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["logreg"], run_dir)
    info = load_run(run_dir)["run"]
    write_json(run_dir / "run.json", {**info, "dataset": {**info["dataset"], "classes": ["=cmd|calc", "@SUM(1)"]}})
    predict(run_dir, images, tmp_path / "p.csv")
    rows = _read(tmp_path / "p.csv")
    assert {r["predicted_class"] for r in rows} - {""} <= {"'=cmd|calc", "'@SUM(1)"}
    assert list(rows[0])[2:4] == ["prob_=cmd|calc", "prob_@SUM(1)"]  # not at the start of a cell: harmless
    assert all(0 <= float(r["prob_=cmd|calc"]) <= 1 for r in rows if not r["error"])


@pytest.mark.timeout(120)
def test_a_fifo_and_a_bomb_named_explicitly_get_error_rows(runs, tmp_path):
    """Issue 9, case 2 for predict: rows with reasons, never an abort or a block."""
    from hostile_fixtures import png_bomb

    os.mkfifo(tmp_path / "pipe.jpg")
    bomb = png_bomb(tmp_path / "bomb.png")
    result = predict(runs["logreg"], [tmp_path / "pipe.jpg", bomb], tmp_path / "p.csv")
    rows = _read(tmp_path / "p.csv")
    assert result.errors == 2 and rows[0]["error"] == "not a regular file: a FIFO"
    assert rows[1]["error"].startswith("image claims 900000000 pixels")
