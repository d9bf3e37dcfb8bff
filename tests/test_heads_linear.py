"""featpipe.heads.linear: logistic regression and linear SVM probes."""

import numpy as np
import pytest

from featpipe.heads import load_head, make_head
from heads_fixtures import splits, validation

LINEAR = ["logreg", "linear-svm"]


def _accuracy(head, data):
    X, y = data["test"]
    return float((head.predict(X) == y).mean())


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_separable_features_are_learned(name, n_classes):
    data = splits(n_classes=n_classes, spread=2.5)
    head = make_head(name).fit(*data["train"], **validation(data))
    assert len(head.classes_) == n_classes and _accuracy(head, data) > 0.85
    assert head.predict_proba(data["test"][0]).shape == (30, n_classes)
    grid = head.selection_["grid"]
    assert [g["params"]["C"] for g in grid] == head.params["C"] and len(grid) >= 6
    assert max(g["score"] for g in grid) == next(g["score"] for g in grid if g["params"] == head.best_params_)


@pytest.mark.parametrize("name", LINEAR)
def test_same_seed_same_predictions_and_save_load_round_trip(name, tmp_path):
    data = splits(n_classes=3, spread=3.0)
    first = make_head(name, {"C": "0.01,1"}, seed=5).fit(*data["train"], **validation(data))
    second = make_head(name, {"C": "0.01,1"}, seed=5).fit(*data["train"], **validation(data))
    X = data["test"][0]
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    loaded = load_head(first.save(tmp_path / "head"))
    assert (tmp_path / "head" / "model.joblib").is_file()
    np.testing.assert_array_equal(loaded.predict_proba(X), first.predict_proba(X))
    assert loaded.selection_ == first.selection_ and loaded.get_params() == first.get_params()


@pytest.mark.parametrize("name", LINEAR)
def test_spatial_features_are_accepted(name):
    data = splits(spatial=True)
    head = make_head(name, {"C": 1}).fit(*data["train"], **validation(data))
    assert _accuracy(head, data) > 0.9


def test_a_hard_to_fit_grid_point_is_recorded_as_not_converged():
    data = splits(n_classes=3, spread=4.0)
    head = make_head("linear-svm", {"C": "0.001,100", "max_iter": 2}).fit(*data["train"], **validation(data))
    assert any(g.get("converged") is False for g in head.selection_["grid"])


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_svm_temperature_scaling_records_before_and_after(n_classes):
    data = splits(n_classes=n_classes, spread=4.0, rows={"train": 120, "validation": 90, "test": 60})
    head = make_head("linear-svm", {"calibration": "temperature"}).fit(*data["train"], **validation(data))
    record = head.selection_["temperature"]
    assert head.selection_["calibration"].startswith("temperature scaling")
    assert record["temperature"] > 0 and set(record) >= {"validation_ece_before", "validation_ece_after"}
    assert record["validation_log_loss_after"] <= record["validation_log_loss_before"] + 1e-9
    # softmax(decision / T): the same argmax as the decision function, probabilities summing to one.
    X = data["test"][0]
    proba = head.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    platt = make_head("linear-svm").fit(*data["train"], **validation(data))
    assert (proba.argmax(axis=1) == platt.model_.model.predict(X)).all()
