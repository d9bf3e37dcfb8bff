"""The weighted k-nearest-neighbour probe of DINOv2 (Oquab et al. 2023, after Wu et al. 2018).

Features are L2-normalised (spatial maps averaged first); a query's k most similar training rows (cosine
similarity) vote for their class with weight exp(similarity / T), and the normalised votes are the class
probabilities: a softmax of similarity / T over the k neighbours, summed per class. DINOv2 reports k in
{10, 20, 100, 200} at T = 0.07; here k and T are a grid chosen on validation like every head's (k capped at
the number of training rows; T from 0.07, listed first so that ties keep DINOv2's value, and 0.02, 0.05,
0.1, 0.2), and the k-nearest lists of the validation rows are computed once for the whole grid.

Exact in every case: the similarities are computed in blocks of training rows and each block's best
candidates are merged into a running top-k, so memory stays bounded by the block sizes whether the training
features are in memory or streamed from the cache (the fitted head then reads them from the cache, and the
saved model file holds them, normalised, in HDF5, read block by block again when they exceed max_memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from featpipe.heads.base import AT_LEAST_ONE, POSITIVE, CachedSplit, Head, Param, chunks, store_params
from featpipe.heads.estimators import VALIDATION_FRACTION, as_matrix

# DINOv2's k values and temperature (eval/knn.py: nb_knn=[10, 20, 100, 200], temperature=0.07).
K_GRID = (10, 20, 100, 200)
TEMPERATURE_GRID = (0.07, 0.02, 0.05, 0.1, 0.2)
# Query rows x training rows per similarity block: 1,024 x 4,096 float64 is 32 MiB. Similarities are computed
# in float64 (rows stored as float32): in float32 a row's result changed in the last bits with its place in
# the block, and so could a near-tie among its neighbours.
QUERY_ROWS = 1024
REFERENCE_ROWS = 4096


def l2_normalized(X) -> np.ndarray:
    """(n, d) float64 rows of unit length (zero rows stay zero), spatial maps averaged first."""
    X = as_matrix(X)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


class Neighbours:
    """The training rows a kNN head votes with, and their labels. `features` is an array of L2-normalised
    rows, a cache's split (normalised block by block as it is read) or a saved model's `SavedRows`."""

    def __init__(self, features, labels: np.ndarray):
        self.features = features
        self.labels = np.asarray(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def blocks(self, rows: int = REFERENCE_ROWS) -> Iterator[np.ndarray]:
        """The normalised rows in order, `rows` at a time."""
        starts = range(0, len(self), rows)
        if isinstance(self.features, SavedRows):
            yield from self.features.blocks(starts, rows)
        elif isinstance(self.features, CachedSplit):
            yield from (l2_normalized(block).astype(np.float32) for block in self.features.blocks(starts, rows))
        else:
            yield from (self.features[start : start + rows] for start in starts)

    def nearest(self, X, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, labels), each (n, k), most similar first, for the rows of X (array or CachedSplit)."""
        parts = [self._nearest_block(l2_normalized(chunk), k) for chunk in chunks(X, QUERY_ROWS)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _nearest_block(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """A running top-k over the training blocks: each block's similarities join the best k so far."""
        n = len(queries)
        sims, rows, start = np.empty((n, 0)), np.empty((n, 0), np.int64), 0
        for block in self.blocks():
            sims = np.hstack([sims, queries @ block.T.astype(np.float64)])
            rows = np.hstack([rows, np.broadcast_to(np.arange(start, start + len(block)), (n, len(block)))])
            start += len(block)
            if sims.shape[1] > k:
                keep = np.argpartition(-sims, k - 1, axis=1)[:, :k]
                sims, rows = np.take_along_axis(sims, keep, 1), np.take_along_axis(rows, keep, 1)
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, 1), self.labels[np.take_along_axis(rows, order, 1)]

    def save(self, path: Path) -> None:
        with h5py.File(path, "w") as f:
            features = f.create_dataset("features", (len(self), self.features.shape[-1]), np.float32)
            start = 0
            for block in self.blocks():
                features[start : start + len(block)] = block
                start += len(block)
            f.create_dataset("labels", data=self.labels)

    @classmethod
    def load(cls, path: Path, max_memory: int) -> "Neighbours":
        """Rows in memory when they fit in `max_memory`, else read from the file block by block."""
        with h5py.File(path, "r") as f:
            labels, shape = f["labels"][()], f["features"].shape
            if 4 * shape[0] * shape[1] <= max_memory:
                return cls(f["features"][()], labels)
        return cls(SavedRows(Path(path), tuple(shape)), labels)


@dataclass(frozen=True)
class SavedRows:
    """The normalised training rows of a saved kNN model file (its "features" dataset), read in blocks."""

    path: Path
    shape: tuple[int, ...]

    def blocks(self, starts, rows: int) -> Iterator[np.ndarray]:
        with h5py.File(self.path, "r") as f:
            for start in starts:
                yield f["features"][start : start + rows]


def weighted_votes(sims: np.ndarray, labels: np.ndarray, k: int, temperature: float, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities: each of the first k neighbours votes exp(similarity / T) for its class;
    votes are normalised (the largest similarity is subtracted first, so nothing overflows)."""
    weights = np.exp((sims[:, :k] - sims[:, :1]) / temperature)
    votes = np.zeros((len(sims), n_classes))
    rows = np.arange(len(sims))
    for j in range(k):
        np.add.at(votes, (rows, labels[:, j]), weights[:, j])
    return votes / votes.sum(axis=1, keepdims=True)


class KNNHead(Head):
    """Cosine k-nearest neighbours with temperature-weighted votes (DINOv2's kNN protocol); k and the
    temperature chosen on validation."""

    name = "knn"
    model_file = "model.h5"
    streams = True
    memory_factor = 4.0  # float32 features as stored, their float64 copy while normalising, the float32 result
    PARAMS = {
        "k": Param(int, grid=True, rule=AT_LEAST_ONE),
        "temperature": Param(float, grid=True, rule=POSITIVE),
        "validation_fraction": VALIDATION_FRACTION,
    }

    def __init__(self, k=K_GRID, temperature=TEMPERATURE_GRID, validation_fraction=0.2, random_state=0,
                 max_memory=None):
        store_params(self, locals())

    def _evaluator(self, X, y, X_val, y_val, params):
        reference = Neighbours(X if isinstance(X, CachedSplit) else l2_normalized(X).astype(np.float32), y)
        longest = min(max(params["k"]), len(y))
        sims, labels = reference.nearest(X_val, longest)  # once for the whole grid
        n_classes = len(self.classes_)

        def evaluate(point):
            k = min(point["k"], len(y))
            proba = weighted_votes(sims, labels, k, point["temperature"], n_classes)
            return (reference, k, point["temperature"]), float((proba.argmax(axis=1) == y_val).mean())

        return evaluate

    def seed_independent(self) -> bool:
        return self.selection_["validation"]["source"] == "given"  # the hold-out without X_val is seeded

    def _adopt(self, best, X_val, y_val) -> None:
        self.model_, self.n_neighbors_, self.temperature_ = best
        self.selection_["protocol"] = ("cosine similarity on L2-normalised features, k nearest training rows vote "
                                       "exp(similarity / temperature), votes normalised (DINOv2 kNN)")
        self.selection_["n_neighbors"] = self.n_neighbors_  # k after capping at the training rows

    def _predict_proba(self, X) -> np.ndarray:
        sims, labels = self.model_.nearest(X, self.n_neighbors_)
        return weighted_votes(sims, labels, self.n_neighbors_, self.temperature_, len(self.classes_))

    def _save_model(self, path: Path) -> None:
        self.model_.save(path)

    def _load_model(self, path: Path) -> Neighbours:
        return Neighbours.load(path, self.memory_budget())
