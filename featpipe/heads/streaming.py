"""Linear models fitted by stochastic gradient descent on row batches: for features bigger than memory.

The same objective as the in-memory solvers: scikit-learn's `C * sum(loss) + ||w||^2 / 2` is
`SGDClassifier`'s `mean(loss) + alpha * ||w||^2 / 2` with ``alpha = 1 / (C * n)``. The normaliser is fitted
in one ordered pass (`StandardScaler.partial_fit`); each epoch then visits the training rows in shuffled
blocks (a cache's rows are sorted by class, and SGD needs mixed batches). Averaged SGD (ASGD) gives
solutions close to the exact optimum in a few epochs.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from sklearn import config_context
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline

from featpipe.heads.base import CachedSplit, chunks
from featpipe.heads.estimators import as_matrix, normalizer

BLOCK_ROWS = 256  # rows per read: one slice of the cache
BATCH_BLOCKS = 16  # blocks per SGD batch: 4,096 rows, mixed from 16 places in the split


def fit_normalizer(kind: str, X):
    """The normaliser of `kind`, fitted on X in one ordered pass of chunks."""
    scaler = normalizer(kind)
    if kind == "standard":
        for chunk in chunks(X):
            scaler.partial_fit(as_matrix(chunk))
        return scaler
    return scaler.fit(as_matrix(next(chunks(X))))  # stateless: fitting only records the width


def shuffled_batches(X, y: np.ndarray, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch: (features, labels) batches of BATCH_BLOCKS blocks taken in a random order, rows shuffled."""
    starts = rng.permutation(np.arange(0, len(y), BLOCK_ROWS))
    blocks = X.blocks(starts, BLOCK_ROWS) if isinstance(X, CachedSplit) else (X[s : s + BLOCK_ROWS] for s in starts)
    for first in range(0, len(starts), BATCH_BLOCKS):
        group = starts[first : first + BATCH_BLOCKS]
        features = np.concatenate([next(blocks) for _ in group])
        labels = np.concatenate([y[s : s + BLOCK_ROWS] for s in group])
        order = rng.permutation(len(labels))
        yield features[order], labels[order]


def predict_chunks(model, X) -> np.ndarray:
    return np.concatenate([model.predict(as_matrix(c)) for c in chunks(X)])


def train_sgd(X, y: np.ndarray, scaler, Cs: list[float], epochs: int, loss: str, seed: int) -> list[SGDClassifier]:
    """One averaged-SGD linear model per C, all trained in the same shuffled passes over X (an array or a
    CachedSplit): each batch is read and normalised once for all of them. `scaler` may be None."""
    classes = np.arange(int(y.max()) + 1)
    models = [SGDClassifier(loss=loss, alpha=1.0 / (C * len(y)), average=True, random_state=seed) for C in Cs]
    rng = np.random.default_rng(seed)
    with config_context(assume_finite=True):  # checked once by the head; not again per batch and model
        for _ in range(epochs):
            for features, labels in shuffled_batches(X, y, rng):
                batch = as_matrix(features) if scaler is None else scaler.transform(as_matrix(features))
                for model in models:
                    model.partial_fit(batch, labels, classes=classes)
    return models


def sgd_evaluator(X, y: np.ndarray, X_val, y_val: np.ndarray, params: dict, loss: str, seed: int):
    """Like SklearnHead._evaluator, streaming: grid point -> (Pipeline[normalize, SGDClassifier], val accuracy).

    Every C of the grid is trained on the first call (`train_sgd`); later calls look their model up.
    """
    scaler = fit_normalizer(params["normalize"], X)
    Cs = list(dict.fromkeys(params["C"]))
    pipelines: list[Pipeline] = []
    scores: list[float] = []

    def evaluate(point):
        if not pipelines:
            models = train_sgd(X, y, scaler, Cs, params["epochs"], loss, seed)
            pipelines.extend(Pipeline([("normalize", scaler), ("classify", model)]) for model in models)
            scores.extend(float((predict_chunks(p, X_val) == y_val).mean()) for p in pipelines)
        i = Cs.index(point["C"])
        return pipelines[i], scores[i]

    return evaluate
