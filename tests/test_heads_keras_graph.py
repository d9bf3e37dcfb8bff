"""featpipe.heads.keras_graph: every head as built-in Keras layers, equal to its predict_proba."""

import keras
import numpy as np
import pytest

from featpipe.heads import make_head
from featpipe.heads.keras_graph import head_probabilities
from heads_fixtures import splits, validation

CASES = {
    "logreg": {},
    "logreg-sgd": {"solver": "sgd"},
    "logreg-l2": {"normalize": "l2"},
    "linear-svm": {},
    "linear-svm-sgd": {"solver": "sgd", "normalize": "none"},
    "linear-svm-temperature": {"calibration": "temperature"},
    "svm": {"C": "1,10"},
    "svm-nystroem": {"kernel": "nystroem", "n_components": 20},
    "svm-temperature": {"calibration": "temperature"},
    "knn": {"k": "5,10"},
}


def as_model(head, feature_shape):
    inputs = keras.Input(feature_shape)
    return keras.Model(inputs, head_probabilities(head, inputs))


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("case", CASES)
def test_layers_compute_the_heads_probabilities(case, n_classes, tmp_path):
    data = splits(n_classes=n_classes, spread=3.0, rows={"train": 90, "validation": 45, "test": 45})
    head = make_head(case.split("-")[0] if case != "linear-svm" and not case.startswith("linear-svm-")
                     else "linear-svm", CASES[case]).fit(*data["train"], **validation(data))
    X = data["test"][0]
    model = as_model(head, X.shape[1:])
    expected = head.predict_proba(X)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(X)), expected, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(X)), expected, atol=1e-5)


def test_spatial_features_are_averaged_first():
    data = splits(n_classes=3, spatial=True, spread=2.0)
    for name in ("logreg", "knn"):
        head = make_head(name).fit(*data["train"], **validation(data))
        X = data["test"][0]
        model = as_model(head, X.shape[1:])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(X)), head.predict_proba(X), atol=1e-5)


@pytest.mark.slow
def test_features_of_scale_1e17_keep_their_standardisation():
    data = {s: (X * 1e-17, y) for s, (X, y) in splits(n_classes=3, spread=2.0).items()}
    head = make_head("logreg").fit(*data["train"], **validation(data))
    X = data["test"][0]
    assert head.score(X, data["test"][1]) > 0.85
    np.testing.assert_allclose(keras.ops.convert_to_numpy(as_model(head, X.shape[1:])(X)), head.predict_proba(X),
                               atol=1e-5)
