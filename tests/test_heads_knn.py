"""featpipe.heads.knn: DINOv2's weighted kNN probe, exact in memory and blockwise from a cache."""

import numpy as np
import pytest

import featpipe.heads.knn as knn
from featpipe.heads import load_head, make_head
from featpipe.heads.base import CachedSplit
from featpipe.store import FeatureCache
from heads_fixtures import splits, validation, write_cache


def brute_force(X_train, y_train, X, k, temperature, n_classes):
    """The protocol written out on the full similarity matrix (in float64; the head keeps its training rows,
    normalised, in float32, hence the 1e-6 tolerance)."""
    def unit(Z):
        return Z / np.linalg.norm(Z, axis=1, keepdims=True)

    sims = unit(X.astype(np.float64)) @ unit(X_train.astype(np.float64)).T
    proba = np.zeros((len(X), n_classes))
    for i, row in enumerate(sims):
        nearest = np.argsort(-row)[:k]
        for j in nearest:
            proba[i, y_train[j]] += np.exp(row[j] / temperature)
    return proba / proba.sum(axis=1, keepdims=True)


def test_probabilities_are_the_temperature_weighted_votes_of_the_k_nearest():
    data = splits(n_classes=3, spread=3.0, rows={"train": 150, "validation": 60, "test": 60})
    head = make_head("knn").fit(*data["train"], **validation(data))
    X, y = data["test"]
    expected = brute_force(*data["train"], X, head.n_neighbors_, head.temperature_, 3)
    np.testing.assert_allclose(head.predict_proba(X), expected, atol=1e-6)
    assert (head.predict(X) == y).mean() > 0.8
    # The grid: DINOv2's k values (200 capped at the 150 training rows) x the temperatures, scored on validation.
    grid = head.selection_["grid"]
    assert len(grid) == 4 * 5 and grid[0]["params"] == {"k": 10, "temperature": 0.07}
    assert head.best_params_ == max(grid, key=lambda g: g["score"])["params"]
    assert head.n_neighbors_ == min(head.best_params_["k"], 150) == head.selection_["n_neighbors"]


def test_k_is_capped_at_the_training_rows():
    data = splits(rows={"train": 12, "validation": 10, "test": 10})
    head = make_head("knn", {"k": 200, "temperature": 0.1}).fit(*data["train"], **validation(data))
    assert head.n_neighbors_ == 12
    X = data["test"][0]
    np.testing.assert_allclose(head.predict_proba(X), brute_force(*data["train"], X, 12, 0.1, 2), atol=1e-6)


def test_blockwise_from_the_cache_equals_in_memory(tmp_path, monkeypatch):
    data = splits(n_classes=3, spread=3.0, rows={"train": 300, "validation": 90, "test": 90})
    path = write_cache(tmp_path / "c-0123456789abcdef.h5", data, ["cat", "dog", "fox"])
    in_memory = make_head("knn").fit(*data["train"], **validation(data))
    # Blocks far smaller than the splits: the running top-k merges 19 training blocks per query block.
    monkeypatch.setattr(knn, "REFERENCE_ROWS", 16)
    monkeypatch.setattr(knn, "QUERY_ROWS", 7)
    with FeatureCache(path) as cache:
        streamed = {s: CachedSplit.of(cache, s) for s in cache.splits}
    head = make_head("knn").fit(streamed["train"], data["train"][1], X_val=streamed["validation"],
                                y_val=data["validation"][1])
    assert isinstance(head.model_.features, CachedSplit)
    assert head.selection_["grid"] == in_memory.selection_["grid"]
    np.testing.assert_allclose(head.predict_proba(streamed["test"]), in_memory.predict_proba(data["test"][0]),
                               atol=1e-6)


def test_save_and_load_in_memory_or_read_in_blocks(tmp_path):
    data = splits(n_classes=3, spread=3.0)
    head = make_head("knn", {"k": "5,10"}).fit(*data["train"], **validation(data))
    X = data["test"][0]
    loaded = load_head(head.save(tmp_path / "run"))
    assert (tmp_path / "run" / "model.h5").is_file() and isinstance(loaded.model_.features, np.ndarray)
    np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))
    assert (loaded.n_neighbors_, loaded.temperature_) == (head.n_neighbors_, head.temperature_)
    # Over its memory budget, the loaded head reads the saved rows block by block: same answers.
    small = make_head("knn", {"k": "5,10"}, max_memory=100).fit(*data["train"], **validation(data))
    reloaded = load_head(small.save(tmp_path / "small"))
    assert isinstance(reloaded.model_.features, knn.SavedRows)
    np.testing.assert_allclose(reloaded.predict_proba(X), head.predict_proba(X), atol=1e-12)


@pytest.mark.parametrize("params, message", [({"k": 0}, "k must be >= 1"), ({"temperature": "-1"}, "must be > 0")])
def test_bad_parameters_are_clear_errors(params, message):
    with pytest.raises(ValueError, match=message):
        make_head("knn", params)


def test_spatial_features_are_averaged_before_the_similarity():
    data = splits(spatial=True, spread=2.0)
    head = make_head("knn", {"k": 5}).fit(*data["train"], **validation(data))
    X = data["test"][0]
    expected = brute_force(data["train"][0].mean(axis=(1, 2)), data["train"][1], X.mean(axis=(1, 2)), 5,
                           head.temperature_, 2)
    np.testing.assert_allclose(head.predict_proba(X), expected, atol=1e-6)
