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
