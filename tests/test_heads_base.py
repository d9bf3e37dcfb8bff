"""featpipe.heads.base: parameters, the grid search, the label check, probabilities, streamed splits."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from featpipe.errors import FeatpipeError
from featpipe.heads.base import (
    FRACTION, POSITIVE, CachedSplit, InvalidInput, Param, as_class_probs, grid_search, holdout,
)
from featpipe.heads import head_class, make_head
from featpipe.store import FeatureCache
from heads_fixtures import splits, synthetic_cache, validation


def test_grid_params_parse_lists_and_scalars_take_one_value():
    c = Param(float, grid=True, rule=POSITIVE)
    assert c.coerce("C", "0.1,1e2") == [0.1, 100.0] and c.coerce("C", 3) == [3.0] and c.coerce("C", (1, 2)) == [1.0, 2.0]
    epochs = Param(int)
    assert epochs.coerce("epochs", " 7 ") == 7
    with pytest.raises(FeatpipeError, match=r"parameter epochs takes one value, got 2"):
        epochs.coerce("epochs", "1,2")


@pytest.mark.parametrize("param, value, message", [
    (Param(float, grid=True, rule=POSITIVE), "0.1,-1", r"parameter x must be > 0, got '-1'"),
    (Param(float, grid=True, rule=POSITIVE), "abc", r"parameter x must be float, got 'abc'"),
    (Param(int), "1.5", r"parameter x must be int, got '1.5'"),
    (Param(int), True, r"parameter x must be int, got True"),
    (Param(float, rule=FRACTION), "1", r"must be in \[0, 1\)"),
    (Param(str, choices=("adam", "rmsprop")), "sgd", r"must be adam, rmsprop, got 'sgd'"),
    (Param(float, grid=True, choices=("scale",), rule=POSITIVE), "auto", r"must be scale or float"),
    (Param(float, grid=True), "", r"must be float, got ''"),
])
def test_bad_param_values_are_clear_errors(param, value, message):
    with pytest.raises(FeatpipeError, match=message):
        param.coerce("x", value)


def test_unknown_constructor_param_is_an_error():
    with pytest.raises(FeatpipeError, match=r"unknown parameter 'c' for head logreg; known: C, max_iter"):
        make_head("logreg", {"c": 1})
    with pytest.raises(TypeError):  # the constructor itself is scikit-learn's: keyword parameters only
        head_class("logreg")(c=1)


def test_grid_points_cover_the_product_in_order():
    head = make_head("svm", {"C": "1,10", "gamma": "scale,0.5"})
    assert head.grid_points() == [{"C": 1.0, "gamma": "scale"}, {"C": 1.0, "gamma": 0.5},
                                  {"C": 10.0, "gamma": "scale"}, {"C": 10.0, "gamma": 0.5}]


def test_grid_search_keeps_the_best_earliest_point_and_records_convergence():
    scores = {1: 0.5, 2: 0.9, 3: 0.9}

    def evaluate(params):
        if params["C"] == 3:
            warnings.warn("did not converge", ConvergenceWarning)
        return f"model{params['C']}", scores[params["C"]]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recorded convergence warning must not escape
        best, params, grid = grid_search([{"C": 1}, {"C": 2}, {"C": 3}], evaluate)
    assert best == "model2" and params == {"C": 2}
    assert grid == [{"params": {"C": 1}, "score": 0.5}, {"params": {"C": 2}, "score": 0.9},
                    {"params": {"C": 3}, "score": 0.9, "converged": False}]


def test_any_labels_are_classes_and_one_class_is_refused():
    data = splits(n_classes=3)
    names = np.array(["cat", "dog", "fox"])
    (X, y), (X_val, y_val) = data["train"], data["validation"]
    head = make_head("logreg", {"C": 1}).fit(X, names[y], X_val=X_val, y_val=names[y_val])
    assert head.classes_.tolist() == ["cat", "dog", "fox"]
    X_test, y_test = data["test"]
    assert set(head.predict(X_test)) <= set(names) and head.score(X_test, names[y_test]) > 0.9
    sparse = make_head("logreg", {"C": 1}).fit(X, y * 5 + 2, X_val=X_val, y_val=y_val * 5 + 2)
    assert sparse.classes_.tolist() == [2, 7, 12]
    with pytest.raises(InvalidInput, match="at least 2 classes"):
        make_head("logreg").fit(X, np.zeros(len(X)))
    with pytest.raises(InvalidInput, match=r"validation labels \[9\] never occur"):
        make_head("logreg").fit(X, y, X_val=X_val, y_val=np.full(len(y_val), 9))


def test_holdout_is_seeded_stratified_and_recorded():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    train, val, record = holdout(y, 0.2, seed=3)
    assert len(val) == 20 and np.bincount(y[val]).tolist() == [10, 6, 4]
    assert not set(train) & set(val) and len(train) + len(val) == 100
    again = holdout(y, 0.2, seed=3)[1]
    assert np.array_equal(again, val) and not np.array_equal(holdout(y, 0.2, seed=4)[1], val)
    assert record == {"source": "hold-out from train", "fraction": 0.2, "stratified": True, "seed": 3, "rows": 20}
    rows, same, tiny = holdout(np.array([0, 0, 1]), 0.2, seed=0)
    assert np.array_equal(rows, same) and tiny["source"].startswith("train (too few rows")


def test_fit_without_validation_carves_a_recorded_hold_out():
    data = splits()
    head = make_head("logreg", {"C": "0.1,1"}, seed=2).fit(*data["train"])
    assert head.selection_["validation"] == {"source": "hold-out from train", "fraction": 0.2, "stratified": True,
                                             "seed": 2, "rows": 12}
    given = make_head("logreg", {"C": "0.1,1"}).fit(*data["train"], **validation(data))
    assert given.selection_["validation"] == {"source": "given", "rows": 30}


def test_class_probs_from_one_sigmoid_unit_or_a_softmax():
    np.testing.assert_allclose(as_class_probs(np.array([[0.25], [1.0]], np.float32)), [[0.75, 0.25], [0.0, 1.0]])
    softmax = np.array([[0.2, 0.3, 0.5000001]], np.float32)
    probs = as_class_probs(softmax)
    assert probs.dtype == np.float64 and probs.sum() == pytest.approx(1.0, abs=1e-15)


def test_cached_split_streams_the_split_in_chunks(tmp_path):
    path = synthetic_cache(tmp_path)
    with FeatureCache(path) as cache:
        split = CachedSplit.of(cache, "train")
        expected = cache.features("train")
    assert split.shape == expected.shape
    chunks = list(split.batches(25))
    assert [len(c) for c in chunks] == [25, 25, 10] and all(c.dtype == np.float32 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), expected)
    # One block at a time, in any order, the last one short.
    for start in (50, 0, 25):
        block = split.block(start, 25)
        assert block.dtype == np.float32
        np.testing.assert_array_equal(block, expected[start : start + 25])
    assert len(split.block(50, 25)) == 10
