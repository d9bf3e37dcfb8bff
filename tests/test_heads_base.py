"""featpipe.heads.base: parameters, the grid search, the label check, probabilities, streamed splits."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from featpipe.errors import FeatpipeError
from featpipe.heads.base import (
    FRACTION, POSITIVE, CachedSplit, Param, as_class_probs, count_classes, grid_search,
)
from featpipe.heads import make_head
from featpipe.store import FeatureCache
from heads_fixtures import synthetic_cache


def test_grid_params_parse_lists_and_scalars_take_one_value():
    c = Param(float, [1.0], grid=True, rule=POSITIVE)
    assert c.coerce("C", "0.1,1e2") == [0.1, 100.0] and c.coerce("C", 3) == [3.0] and c.coerce("C", (1, 2)) == [1.0, 2.0]
    epochs = Param(int, 5)
    assert epochs.coerce("epochs", " 7 ") == 7
    with pytest.raises(FeatpipeError, match=r"parameter epochs takes one value, got 2"):
        epochs.coerce("epochs", "1,2")


@pytest.mark.parametrize("param, value, message", [
    (Param(float, [1.0], grid=True, rule=POSITIVE), "0.1,-1", r"parameter x must be > 0, got '-1'"),
    (Param(float, [1.0], grid=True, rule=POSITIVE), "abc", r"parameter x must be float, got 'abc'"),
    (Param(int, 1), "1.5", r"parameter x must be int, got '1.5'"),
    (Param(int, 1), True, r"parameter x must be int, got True"),
    (Param(float, 0.5, rule=FRACTION), "1", r"must be in \[0, 1\)"),
    (Param(str, "adam", choices=("adam", "rmsprop")), "sgd", r"must be adam, rmsprop, got 'sgd'"),
    (Param(float, ["scale"], grid=True, choices=("scale",), rule=POSITIVE), "auto", r"must be scale or float"),
    (Param(float, [1.0], grid=True), "", r"must be float, got ''"),
])
def test_bad_param_values_are_clear_errors(param, value, message):
    with pytest.raises(FeatpipeError, match=message):
        param.coerce("x", value)


def test_unknown_constructor_param_is_an_error():
    with pytest.raises(FeatpipeError, match=r"unknown parameter 'c' for head logreg; known: C, max_iter"):
        make_head("logreg", {"c": 1})


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


def test_labels_must_be_contiguous_from_zero():
    assert count_classes(np.array([0, 2, 1, 1])) == 3
    for bad in ([0, 0, 0], [1, 2], [0, 2]):
        with pytest.raises(FeatpipeError, match="every class present"):
            count_classes(np.array(bad))


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
