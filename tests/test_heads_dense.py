"""featpipe.heads.dense: the Deep Learning with Python head in Keras."""

import keras
import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from featpipe.heads import load_head, make_head
from featpipe.heads.base import CachedSplit
from featpipe.store import FeatureCache
import featpipe.heads.dense as dense_module
from featpipe.metrics import calibration
from featpipe.model_parts import standardize_layers
from dataset_graph import dataset_ops
from heads_fixtures import blobs, splits, synthetic_cache, validation, write_cache, validation

FAST = {"units": 16, "epochs": 8, "patience": 3, "batch_size": 16, "learning_rate": 0.01}


def _fit(data, seed=0, **params):
    return make_head("dense", {**FAST, **params}, seed=seed).fit(*data["train"], **validation(data))


@pytest.mark.parametrize("n_classes, spatial", [(2, False), pytest.param(3, False, marks=pytest.mark.slow),
                                                 pytest.param(3, True, marks=pytest.mark.slow)])
def test_learns_binary_multiclass_and_spatial_features(n_classes, spatial):
    data = splits(n_classes=n_classes, spatial=spatial, spread=2.0)
    head = _fit(data)
    X, y = data["test"]
    assert (head.predict(X) == y).mean() > 0.85
    layers = [type(layer).__name__ for layer in head.model_.layers]
    assert layers[1] == ("GlobalAveragePooling2D" if spatial else "Flatten")
    assert head.model_.output_shape == (None, 1 if n_classes == 2 else n_classes)
    assert head.predict_proba(X).shape == (len(y), n_classes)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_grid_over_learning_rate_and_normalisation_layers():
    data = splits(spread=2.0)
    head = _fit(data, learning_rate="0.001,0.01", normalize="standard", optimizer="adam", epochs=3)
    assert [g["params"]["learning_rate"] for g in head.selection_["grid"]] == [0.001, 0.01]
    assert any(layer.name == "standardize" for layer in head.model_.layers)
    l2 = _fit(data, normalize="l2", epochs=2)
    assert any(layer.name == "l2_normalize" for layer in l2.model_.layers)


@pytest.mark.slow
def test_streams_features_from_the_cache(tmp_path):
    path = synthetic_cache(tmp_path, n_classes=3)
    with FeatureCache(path) as cache:
        streamed = {s: CachedSplit.of(cache, s) for s in cache.splits}
        arrays = {s: (cache.features(s), cache.labels(s)) for s in cache.splits}
    head = make_head("dense", FAST).fit(streamed["train"], arrays["train"][1], X_val=streamed["validation"],
                                        y_val=arrays["validation"][1])
    X, y = arrays["test"]
    np.testing.assert_allclose(head.predict_proba(streamed["test"]), head.predict_proba(X), rtol=1e-6)
    assert (head.predict(X) == y).mean() > 0.85


def _badly_scaled(rows: int, seed: int):
    """The class signal in dimensions of scale 1e-3, next to dimensions of scale 1e3 that carry none:
    pooled features of a random-initialised base look like this."""
    X, y = blobs(rows, dim=8, seed=seed, spread=3.0)
    noise = np.random.default_rng(seed).normal(1.0, 1.0, (rows, 8))
    return np.hstack([X * 1e-3, noise * 1e3]).astype(np.float32), y


@pytest.mark.slow
def test_standardised_by_default_so_badly_scaled_features_are_learned(tmp_path):
    data = {s: _badly_scaled(n, i) for i, (s, n) in enumerate({"train": 400, "validation": 200, "test": 200}.items())}
    X, y = data["test"]
    fast = {"units": 32, "epochs": 20, "patience": 5}
    logreg = make_head("logreg").fit(*data["train"], **validation(data)).score(X, y)
    head = make_head("dense", fast).fit(*data["train"], **validation(data))
    assert head.params["normalize"] == "standard" and head.score(X, y) >= logreg - 0.03
    # The statistics are the training split's, inside the saved model: predict and export see them.
    layer = head.model_.get_layer("standardize")
    np.testing.assert_allclose(np.asarray(layer.mean).ravel(), data["train"][0].mean(0), rtol=1e-3)
    loaded = load_head(head.save(tmp_path))
    assert loaded.model_.get_layer("standardize") is not None
    np.testing.assert_allclose(loaded.predict_proba(X), head.predict_proba(X), rtol=1e-6)
    # Without it (the old head), the network sits at chance on the same features.
    raw = make_head("dense", {**fast, "normalize": "none"}).fit(*data["train"], **validation(data))
    assert raw.score(X, y) < 0.65


def test_streaming_a_class_sorted_cache_mixes_the_classes(tmp_path, monkeypatch):
    # A shuffle buffer far smaller than the split, over rows sorted by class as extract writes them.
    monkeypatch.setattr(dense_module, "STREAM_ROWS", 8)
    monkeypatch.setattr(dense_module, "SHUFFLE_ROWS", 16)
    data = splits(spread=2.5, rows={"train": 320, "validation": 80, "test": 80})
    data = {split: (X[np.argsort(y, kind="stable")], np.sort(y)) for split, (X, y) in data.items()}
    path = write_cache(tmp_path / "sorted-0123456789abcdef.h5", data, ["cat", "dog"])
    with FeatureCache(path) as cache:
        train = CachedSplit.of(cache, "train")
    y = data["train"][1]
    epoch = [(X.numpy(), labels.numpy()) for X, labels in dense_module.feature_dataset(train, y, 8, shuffle=True)]
    # Every row once, each with its own label; both classes from the first batches on, not one class at a time.
    features = np.concatenate([X for X, _ in epoch])
    labels = np.concatenate([labels for _, labels in epoch])
    order = np.lexsort(features.T[::-1])
    expected = np.lexsort(data["train"][0].T[::-1])
    np.testing.assert_array_equal(features[order], data["train"][0][expected])
    np.testing.assert_array_equal(labels[order], y[expected])
    assert len(set(np.concatenate([labels for _, labels in epoch[:4]]))) == 2
    assert all(len(set(np.concatenate([b for _, b in epoch[i : i + 8]]))) == 2 for i in range(0, len(epoch), 8))


def test_features_of_scale_1e17_are_standardised_like_scikit_learn_does(tmp_path):
    # A random-initialised base at 48 px gives pooled features ~1e-17: keras' Normalization floors the
    # deviation at 1e-7 and the head stayed at chance; divided by their deviation they are learned.
    data = {s: (X * 1e-17, y) for s, (X, y) in splits(spread=2.0).items()}
    X, y = data["test"]
    head = _fit(data)
    assert head.score(X, y) > 0.85
    model = head.model_
    standardised = keras.Model(model.input, model.get_layer("standardize_small_scale").output)
    expected = StandardScaler().fit(data["train"][0]).transform(X)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(standardised(X)), expected, rtol=1e-4, atol=1e-5)
    loaded = load_head(head.save(tmp_path))
    np.testing.assert_allclose(loaded.predict_proba(X), head.predict_proba(X), rtol=1e-6)


def test_a_constant_feature_is_divided_by_one():
    X = np.random.default_rng(0).normal(size=(50, 3))
    X[:, 1] = 5.0
    scaler = StandardScaler().fit(X)
    layers = standardize_layers(scaler.mean_, scaler.scale_)
    out = X.astype(np.float32)
    for layer in layers:
        out = keras.ops.convert_to_numpy(layer(out))
    np.testing.assert_allclose(out, StandardScaler().fit_transform(X), atol=1e-5)
    assert np.all(out[:, 1] == 0)


@pytest.mark.slow
@pytest.mark.parametrize("n_classes", [2, 3])
def test_temperature_scaling_is_fitted_on_validation_and_lowers_its_log_loss(n_classes, tmp_path):
    data = splits(n_classes=n_classes, spread=6.0, rows={"train": 120, "validation": 200, "test": 60})
    params = {"epochs": 5, "units": 32, "learning_rate": 0.02}
    plain = _fit(data, **params)
    head = _fit(data, **params, calibration="temperature")
    record = head.selection_["temperature"]
    temperature = record["temperature"]
    assert temperature != pytest.approx(1.0, abs=1e-3)
    # The temperature minimises the validation log loss: never above the uncalibrated one.
    assert record["validation_log_loss_after"] <= record["validation_log_loss_before"] + 1e-9
    X_val = data["validation"][0]
    before = calibration(data["validation"][1], plain.predict_proba(X_val))["ece"]
    assert record["validation_ece_before"] == pytest.approx(before, abs=1e-6)
    # Same predictions (the temperature never changes the argmax), softer probabilities, saved in the model.
    X = data["test"][0]
    np.testing.assert_array_equal(head.predict(X), plain.predict(X))
    softer = head.predict_proba(X).max(axis=1).mean() < plain.predict_proba(X).max(axis=1).mean()
    assert softer == (temperature > 1)
    np.testing.assert_allclose(load_head(head.save(tmp_path)).predict_proba(X), head.predict_proba(X), rtol=1e-6)


def test_streamed_epochs_are_new_orders_of_every_row_and_the_same_for_the_same_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(dense_module, "STREAM_ROWS", 8)
    path = synthetic_cache(tmp_path, n_classes=2)
    with FeatureCache(path) as cache:
        train, y = CachedSplit.of(cache, "train"), cache.labels("train")

    def epochs(seed):
        dataset = dense_module.feature_dataset(train, y, 1000, shuffle=True, seed=seed)
        return [next(iter(dataset))[1].numpy() for _ in range(2)]

    first, second = epochs(0)
    assert len(first) == len(y) and sorted(first) == sorted(second) == sorted(y) and (first != second).any()
    again = epochs(0)
    np.testing.assert_array_equal(first, again[0])
    np.testing.assert_array_equal(second, again[1])
    # Blocks enter tf.data through featpipe.python_items, not a generator dataset (see there why).
    assert not any("Generator" in op for op in dataset_ops(dense_module.feature_dataset(train, y)))


def test_a_streamed_pass_abandoned_then_taken_up_again_still_gives_every_row_once(tmp_path, monkeypatch):
    monkeypatch.setattr(dense_module, "STREAM_ROWS", 8)
    monkeypatch.setattr(dense_module, "SHUFFLE_ROWS", 16)
    path = synthetic_cache(tmp_path, n_classes=2)
    with FeatureCache(path) as cache:
        train, y, features = CachedSplit.of(cache, "train"), cache.labels("train"), cache.features("train")
    dataset = dense_module.feature_dataset(train, y, 8, shuffle=True)
    abandoned = iter(dataset)
    taken = [next(abandoned)[0].numpy()]
    whole = np.concatenate([X.numpy() for X, _ in dataset])  # another pass meanwhile
    taken += [X.numpy() for X, _ in abandoned]

    def rows(X):
        return X[np.lexsort(X.T[::-1])]

    np.testing.assert_array_equal(rows(np.concatenate(taken)), rows(features))
    np.testing.assert_array_equal(rows(whole), rows(features))
