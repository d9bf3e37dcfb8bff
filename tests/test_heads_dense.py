"""featpipe.heads.dense: the Deep Learning with Python head in Keras."""

import numpy as np
import pytest

from featpipe.heads import load_head, make_head
from featpipe.heads.base import CachedSplit
from featpipe.store import FeatureCache
from heads_fixtures import splits, synthetic_cache

FAST = {"units": 16, "epochs": 8, "patience": 3, "batch_size": 16, "learning_rate": 0.01}


def _fit(data, seed=0, **params):
    return make_head("dense", {**FAST, **params}, seed=seed).fit(*data["train"], *data["validation"])


@pytest.mark.parametrize("n_classes, spatial", [(2, False), (3, False), (3, True)])
def test_learns_binary_multiclass_and_spatial_features(n_classes, spatial):
    data = splits(n_classes=n_classes, spatial=spatial, spread=2.0)
    head = _fit(data)
    X, y = data["test"]
    assert (head.predict(X) == y).mean() > 0.85
    layers = [type(layer).__name__ for layer in head.model_.layers]
    assert layers[1] == ("GlobalAveragePooling2D" if spatial else "Flatten")
    assert head.model_.output_shape == (None, 1 if n_classes == 2 else n_classes)
    assert head.predict_proba(X).shape == (len(y), n_classes)


def test_early_stopping_keeps_the_best_epoch_and_its_history():
    data = splits(spread=2.0)
    head = _fit(data, epochs=30, patience=2, learning_rate=0.05)
    history = head.history_
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    n_epochs = len(history["loss"])
    best = head.selection_["best_epoch"]
    assert best == int(np.argmin(history["val_loss"])) and n_epochs <= best + 3
    assert head.selection_["grid"][0]["score"] == history["val_accuracy"][best]
    # The kept weights are the best epoch's: evaluating them gives its validation loss.
    loss = head.model_.evaluate(*data["validation"], verbose=0)[0]
    assert loss == pytest.approx(history["val_loss"][best], rel=1e-4)


def test_same_seed_same_predictions_and_save_load_round_trip(tmp_path):
    data = splits(n_classes=3, spread=2.0)
    X = data["test"][0]
    first, second = _fit(data, seed=4, epochs=4), _fit(data, seed=4, epochs=4)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    assert not np.array_equal(_fit(data, seed=5, epochs=4).predict_proba(X), first.predict_proba(X))
    loaded = load_head(first.save(tmp_path))
    assert (tmp_path / "model.keras").is_file()
    np.testing.assert_array_equal(loaded.predict_proba(X), first.predict_proba(X))
    assert loaded.history_ == first.history_


def test_grid_over_learning_rate_and_normalisation_layers():
    data = splits(spread=2.0)
    head = _fit(data, learning_rate="0.001,0.01", normalize="standard", optimizer="adam", epochs=3)
    assert [g["params"]["learning_rate"] for g in head.selection_["grid"]] == [0.001, 0.01]
    assert any(layer.name == "standardize" for layer in head.model_.layers)
    l2 = _fit(data, normalize="l2", epochs=2)
    assert any(layer.name == "l2_normalize" for layer in l2.model_.layers)


def test_streams_features_from_the_cache(tmp_path):
    path = synthetic_cache(tmp_path, n_classes=3)
    with FeatureCache(path) as cache:
        streamed = {s: CachedSplit.of(cache, s) for s in cache.splits}
        arrays = {s: (cache.features(s), cache.labels(s)) for s in cache.splits}
    head = make_head("dense", FAST).fit(streamed["train"], arrays["train"][1], streamed["validation"],
                                        arrays["validation"][1])
    X, y = arrays["test"]
    np.testing.assert_allclose(head.predict_proba(streamed["test"]), head.predict_proba(X), rtol=1e-6)
    assert (head.predict(X) == y).mean() > 0.85
