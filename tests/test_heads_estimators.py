"""featpipe.heads.estimators: what the scikit-learn heads share."""

import numpy as np
import pytest

from featpipe.heads import make_head
from featpipe.heads.estimators import as_matrix, normalizer
from heads_fixtures import splits, validation


def test_spatial_features_are_averaged_to_float64_rows():
    maps = np.arange(2 * 2 * 3 * 4, dtype=np.float16).reshape(2, 2, 3, 4)
    matrix = as_matrix(maps)
    assert matrix.dtype == np.float64 and matrix.shape == (2, 4)
    np.testing.assert_allclose(matrix, maps.astype(np.float64).mean(axis=(1, 2)))
    assert as_matrix(np.ones((3, 5), np.float32)).shape == (3, 5)


@pytest.mark.parametrize("kind", ["none", "l2", "standard"])
def test_the_normalize_step_is_recorded_and_applied(kind):
    data = splits(dim=6)
    head = make_head("logreg", {"C": 1, "normalize": kind}).fit(*data["train"], **validation(data))
    X = as_matrix(data["test"][0])
    step = head.model_.named_steps["normalize"]
    np.testing.assert_allclose(step.transform(X), normalizer(kind).fit(as_matrix(data["train"][0])).transform(X))
    if kind == "l2":
        np.testing.assert_allclose(np.linalg.norm(step.transform(X), axis=1), 1.0)


def test_svms_are_calibrated_on_validation_and_give_probabilities():
    data = splits(n_classes=3)
    for name in ("linear-svm", "svm"):
        head = make_head(name, {"C": "0.1,1"}).fit(*data["train"], **validation(data))
        proba = head.predict_proba(data["test"][0])
        assert proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1)
        assert head.selection_["calibration"].startswith("sigmoid")
    assert "calibration" not in make_head("logreg", {"C": 1}).fit(*data["train"], **validation(data)).selection_


# --- issue 20, item 4: Platt scaling that cannot be fitted, or would invert the model ---------------------------


def _separable(rng, n, n_classes=2):
    y = np.arange(n) % n_classes
    X = rng.normal(0, 1, (n, 6))
    X[:, 0] += 4 * y
    return X, y


@pytest.mark.parametrize("name", ["svm", "linear-svm"])
def test_a_one_class_validation_split_falls_back_in_a_recorded_way(name):
    from featpipe.heads import make_head

    rng = np.random.default_rng(0)
    X, y = _separable(rng, 40)
    X_val, _ = _separable(rng, 6)
    X_val[:, 0] = 4  # every validation row is of class 1
    head = make_head(name, {}, 0).fit(X, y, X_val=X_val, y_val=np.ones(6, dtype=int))
    assert head.selection_["calibration"].startswith("none: logistic of the decision values (the validation "
                                                     "split has 6 rows of one class")
    proba = head.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1) and (head.predict(X) == y).mean() > 0.9
    assert head.selection_["kept_validation_accuracy"] == (head.predict(X_val) == 1).mean()


@pytest.mark.parametrize("name", ["svm", "linear-svm"])
def test_a_sigmoid_that_would_invert_the_model_is_not_kept(name):
    """Validation labels that disagree with the model (a tiny, unlucky split): Platt's slope comes out
    positive and would flip every prediction; the model's own ranking is kept instead, and said so."""
    from featpipe.heads import make_head

    rng = np.random.default_rng(1)
    X, y = _separable(rng, 40)
    X_val, y_val = _separable(rng, 8)
    head = make_head(name, {"C": "1"}, 0).fit(X, y, X_val=X_val, y_val=1 - y_val)
    assert "would invert the model" in head.selection_["calibration"]
    assert (head.predict(X) == y).mean() > 0.9  # not inverted: Platt alone would give ~0 here
    assert head.selection_["kept_validation_accuracy"] == (head.predict(X_val) == 1 - y_val).mean() < 0.2


def test_a_class_missing_from_validation_and_a_good_split_stay_calibrated_or_say_why():
    from featpipe.heads import make_head

    rng = np.random.default_rng(2)
    X, y = _separable(rng, 60, 3)
    X_val, y_val = _separable(rng, 12, 3)
    good = make_head("linear-svm", {}, 0).fit(X, y, X_val=X_val, y_val=y_val)
    assert good.selection_["calibration"] == "sigmoid (Platt) on the validation split, after selection"
    assert good.selection_["kept_validation_accuracy"] == (good.predict(X_val) == y_val).mean()
    keep = y_val != 2
    missing = make_head("svm", {}, 0).fit(X, y, X_val=X_val[keep], y_val=y_val[keep])
    assert "class 2 has no validation row" in missing.selection_["calibration"]
    assert np.allclose(missing.predict_proba(X).sum(axis=1), 1)
