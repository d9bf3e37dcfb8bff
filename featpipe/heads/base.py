"""The head contract, its parameters, and the validation-grid search every head shares.

A head is a scikit-learn classifier: the constructor stores its keyword parameters verbatim (checked in
`fit`), `get_params` / `set_params` / `clone` come from `BaseEstimator`, and `fit(X, y, *, X_val=None,
y_val=None)` fits one model per grid point on train, keeps the one with the best validation accuracy (ties
go to the earlier point) and returns self; learned state ends in ``_`` (`classes_`, `n_features_in_`,
`selection_`). Without validation data a seeded, stratified hold-out is carved from train, and recorded.
The selected model is the one fitted on train alone, never refitted on train + validation, so the validation
score it reports is the one it was chosen by and the test split stays untouched until the final evaluation.
"""

from __future__ import annotations

import abc
import itertools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import h5py
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featpipe.errors import FeatpipeError
from featpipe.runs import read_json, write_json
from featpipe.store import FeatureCache

HEAD_FILE = "head.json"
NORMALIZE_CHOICES = ("none", "l2", "standard")
REFIT = "none: the selected model is the one fitted on train"
# Rows per chunk when a split is read or predicted piecewise: bounds the temporary float64 copies.
CHUNK_ROWS = 4096

# (description, check) pairs for numeric parameters.
POSITIVE = ("> 0", lambda v: v > 0)
AT_LEAST_ONE = (">= 1", lambda v: v >= 1)
NON_NEGATIVE = (">= 0", lambda v: v >= 0)
FRACTION = ("in [0, 1)", lambda v: 0 <= v < 1)
OPEN_FRACTION = ("in (0, 1)", lambda v: 0 < v < 1)


class InvalidInput(FeatpipeError, ValueError):
    """Bad parameters or data given to a head: a one-line error for the CLI, a ValueError for scikit-learn."""


@dataclass(frozen=True)
class Param:
    """How a head parameter is checked: its type, whether it takes a grid of values to search, its rule."""

    kind: type  # float, int or str
    grid: bool = False
    choices: tuple[str, ...] = ()  # allowed words (the only values when kind is str)
    rule: tuple[str, Callable[[Any], bool]] | None = None

    def coerce(self, name: str, value: Any) -> Any:
        """A typed value (a list for grid parameters) from a typed value, a list, or ``"0.1,1,10"``."""
        items = value.split(",") if isinstance(value, str) else value
        items = list(items) if isinstance(items, (list, tuple, np.ndarray)) else [items]
        values = [self._one(name, item) for item in items]
        if not values:
            raise InvalidInput(f"parameter {name} needs a value")
        if self.grid:
            return values
        if len(values) > 1:
            raise InvalidInput(f"parameter {name} takes one value, got {len(values)}: {value!r}")
        return values[0]

    def _one(self, name: str, item: Any) -> Any:
        item = item.strip() if isinstance(item, str) else item
        if isinstance(item, str) and item in self.choices:
            return item
        expected = " or ".join(filter(None, [", ".join(self.choices), "" if self.kind is str else self.kind.__name__]))
        try:
            if self.kind is str or isinstance(item, (bool, np.bool_)):
                raise ValueError
            number = self.kind(item)
            if self.kind is int and isinstance(item, (float, np.floating)) and number != item:
                raise ValueError
        except (TypeError, ValueError):
            raise InvalidInput(f"parameter {name} must be {expected}, got {item!r}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise InvalidInput(f"parameter {name} must be a finite number, got {item!r}")
        if self.rule and not self.rule[1](number):
            raise InvalidInput(f"parameter {name} must be {self.rule[0]}, got {item!r}")
        return number


@dataclass(frozen=True)
class CachedSplit:
    """A split whose features stay on disk, read in row chunks: for caches bigger than memory."""

    path: Path
    split: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, cache: FeatureCache, split: str) -> "CachedSplit":
        return cls(cache.path, split, (cache.n_rows(split), *cache.feature_shape))

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, rows: int) -> Iterator[np.ndarray]:
        """The split in order, `rows` at a time."""
        with FeatureCache(self.path) as cache:
            for features, _ in cache.iter_batches(self.split, rows):
                yield features.astype(np.float32)

    def blocks(self, starts, rows: int) -> Iterator[np.ndarray]:
        """Row blocks ``[start, start + rows)`` in the order given: shuffled passes over a split on disk.

        FeatureCache only reads in order, and a cache's rows are sorted by class; a stochastic solver needs
        mixed batches, so this reads the cache's ``<split>/features`` dataset by slices.
        """
        with h5py.File(self.path, "r") as f:
            features = f[self.split]["features"]
            for start in starts:
                yield features[start : start + rows].astype(np.float32)

    def block(self, start: int, rows: int) -> np.ndarray:
        """Rows ``[start, start + rows)``, the file opened for them alone: one block at a time, in any order."""
        (features,) = self.blocks([start], rows)
        return features


def store_params(head, arguments: dict) -> None:
    """An ``__init__``'s body: keep every keyword argument verbatim (`fit` checks them), as scikit-learn asks."""
    vars(head).update({key: value for key, value in arguments.items() if key not in ("self", "__class__")})


def chunks(X, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """An array or a CachedSplit, `rows` at a time, in order."""
    if isinstance(X, CachedSplit):
        yield from X.batches(rows)
    else:
        for start in range(0, len(X), rows):
            yield X[start : start + rows]


def default_max_memory() -> int:
    """Half the physical memory: the features are not the only thing in it."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class Head(ClassifierMixin, BaseEstimator, abc.ABC):
    """A classifier on cached features. Subclasses set `name`, `model_file`, `PARAMS`, an ``__init__`` that
    stores its keyword arguments (always `random_state`, `max_memory` and `validation_fraction`) and the hooks.

    `PARAMS` says how each parameter of ``--param`` is checked; its keys are the constructor's parameters
    minus `random_state` and `max_memory` (set by train's --seed and --max-memory).
    """

    name: ClassVar[str]
    model_file: ClassVar[str]
    PARAMS: ClassVar[dict[str, Param]]
    streams: ClassVar[bool] = False  # True when fit/predict_proba can accept a CachedSplit
    memory_factor: ClassVar[float] = 1.0  # peak memory of in-memory training / the features' size as stored

    # --- parameters -------------------------------------------------------------------------------------

    @property
    def params(self) -> dict:
        """The `PARAMS` parameters, checked and typed (grid parameters as lists): what fit uses and runs record."""
        return {key: spec.coerce(key, getattr(self, key)) for key, spec in self.PARAMS.items()}

    def memory_budget(self) -> int:
        if self.max_memory is None:
            return default_max_memory()
        if isinstance(self.max_memory, (bool, np.bool_)) or not isinstance(self.max_memory, (int, np.integer)) \
                or self.max_memory <= 0:
            raise InvalidInput(f"parameter max_memory must be a number of bytes > 0 or None, got {self.max_memory!r}")
        return int(self.max_memory)

    def grid_points(self) -> list[dict]:
        """Every combination of the grid parameters' values, in the order given."""
        params = self.params
        keys = [key for key, spec in self.PARAMS.items() if spec.grid]
        return [dict(zip(keys, values)) for values in itertools.product(*(params[k] for k in keys))]

    def can_stream(self) -> bool:
        return self.streams

    def seed_independent(self) -> bool:
        """True when this fitted head would have been the same with any `random_state` (same data, same
        params): label-efficiency curves then need only one fit on the same rows."""
        return False

    # --- fitting ----------------------------------------------------------------------------------------

    def fit(self, X, y, *, X_val=None, y_val=None) -> "Head":
        params = self.params
        seed = self._seed()
        self.memory_budget()
        X, y = self._check_train(X, y)
        if X_val is None:
            if y_val is not None:
                raise InvalidInput("y_val given without X_val")
            if isinstance(X, CachedSplit):
                raise InvalidInput("a training split streamed from the cache needs its validation split (X_val, y_val)")
            train_rows, val_rows, validation = holdout(y, params["validation_fraction"], seed)
            X, y, X_val, y_val = X[train_rows], y[train_rows], X[val_rows], y[val_rows]
        else:
            X_val, y_val = self._check_validation(X_val, y_val)
            validation = {"source": "given", "rows": len(y_val)}
        evaluate = self._evaluator(X, y, X_val, y_val, params)
        best, self.best_params_, grid = grid_search(self.grid_points(), lambda p: evaluate({**params, **p}))
        self.selection_ = {"metric": "accuracy", "grid": grid, "best_params": self.best_params_, "refit": REFIT,
                           "validation": validation}
        self._adopt(best, X_val, y_val)
        return self

    def _seed(self) -> int:
        if isinstance(self.random_state, (bool, np.bool_)) or not isinstance(self.random_state, (int, np.integer)):
            raise InvalidInput(f"parameter random_state must be an int, got {self.random_state!r}")
        return int(self.random_state)

    def _check_train(self, X, y):
        """(X, y as 0..k-1); sets classes_ and n_features_in_. A CachedSplit is taken as it is."""
        if isinstance(X, CachedSplit):
            y = np.asarray(y)
            if len(y) != len(X):
                raise InvalidInput(f"{len(X)} feature rows but {len(y)} labels")
            self.n_features_in_ = X.shape[1]
        else:
            X, y = validate_data(self, X, y, allow_nd=True, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise InvalidInput(f"a head needs at least 2 classes in the training labels, got 1 class: "
                               f"{self.classes_[0]!r}")
        return X, encoded

    def _check_validation(self, X_val, y_val):
        if y_val is None:
            raise InvalidInput("X_val given without y_val")
        y_val = np.asarray(y_val)
        if not isinstance(X_val, CachedSplit):
            X_val = self._check_features(X_val)
        if len(X_val) != len(y_val):
            raise InvalidInput(f"{len(X_val)} validation feature rows but {len(y_val)} labels")
        unknown = np.setdiff1d(y_val, self.classes_)
        if len(unknown):
            raise InvalidInput(f"validation labels {unknown.tolist()} never occur in the training labels")
        return X_val, np.searchsorted(self.classes_, y_val)

    def _check_features(self, X):
        return validate_data(self, X, reset=False, allow_nd=True, dtype=[np.float32, np.float64])

    # --- predicting -------------------------------------------------------------------------------------

    def predict_proba(self, X) -> np.ndarray:
        """(n, n_classes) class probabilities, in the order of `classes_`."""
        check_is_fitted(self)
        if not isinstance(X, CachedSplit):
            X = self._check_features(X)
        return self._predict_proba(X)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks that the head is fitted
        return self.classes_[proba.argmax(axis=1)]

    @abc.abstractmethod
    def _predict_proba(self, X) -> np.ndarray:
        """Probabilities for checked features (an array or a CachedSplit)."""

    @abc.abstractmethod
    def _evaluator(self, X, y, X_val, y_val, params: dict) -> Callable[[dict], tuple[Any, float]]:
        """A function: full params of one grid point -> (fitted model, validation accuracy)."""

    def _adopt(self, best, X_val, y_val) -> None:
        """Keep the selected model (subclasses may calibrate it or unpack extra state)."""
        self.model_ = best

    # --- files ------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def _save_model(self, path: Path) -> None: ...

    @abc.abstractmethod
    def _load_model(self, path: Path): ...

    def save(self, directory) -> Path:
        """The model file plus head.json (name, constructor params and the JSON-able learned state)."""
        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model(directory / self.model_file)
        state = {k: v for k, v in vars(self).items() if k.endswith("_") and k != "model_"}
        state["classes_"] = self.classes_.tolist()
        write_json(directory / HEAD_FILE, {"head": self.name, "params": self.get_params(deep=False), "state": state})
        return directory

    @classmethod
    def load(cls, directory) -> "Head":
        directory = Path(directory)
        saved = read_head_file(directory)
        head = cls(**saved["params"])
        vars(head).update(saved["state"])
        head.classes_ = np.asarray(saved["state"]["classes_"])
        head.model_ = head._load_model(directory / cls.model_file)
        return head


def read_head_file(directory) -> dict:
    return read_json(Path(directory) / HEAD_FILE)


def holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train rows, validation rows, record): a seeded, stratified hold-out of `fraction` of the rows.

    With too few rows to leave every class on both sides, validation is the training rows themselves (the
    selection then measures training accuracy), and the record says so.
    """
    n, k = len(y), int(y.max()) + 1
    n_val = math.ceil(fraction * n)
    rows = np.arange(n)
    if np.bincount(y).min() < 2 or n_val < k or n - n_val < k:
        return rows, rows, {"source": "train (too few rows to hold any out)", "rows": n}
    split = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
    train_rows, val_rows = next(split.split(rows, y))
    return np.sort(train_rows), np.sort(val_rows), {
        "source": "hold-out from train", "fraction": fraction, "stratified": True, "seed": seed, "rows": len(val_rows)}


def grid_search(points: list[dict], evaluate: Callable[[dict], tuple[Any, float]]) -> tuple[Any, dict, list[dict]]:
    """(best model, its grid point, [{"params", "score"(, "converged")}]): highest validation score wins,
    ties go to the earlier point. Convergence warnings are recorded per point instead of printed."""
    best, best_score, best_params, grid = None, -np.inf, None, []
    for params in points:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model, score = evaluate(params)
        entry = {"params": params, "score": float(score)}
        for warning in caught:
            if issubclass(warning.category, ConvergenceWarning):
                entry["converged"] = False
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        grid.append(entry)
        if score > best_score:
            best, best_score, best_params = model, score, params
    return best, best_params, grid


def as_class_probs(output: np.ndarray) -> np.ndarray:
    """(n, k) float64 probabilities from a model output: one sigmoid unit (binary) becomes [1 - p, p];
    rows are renormalised so float32 rounding does not leave them summing to 1 +- 1e-7."""
    output = np.asarray(output, dtype=np.float64)
    probabilities = np.hstack([1 - output, output]) if output.shape[1] == 1 else output
    return probabilities / probabilities.sum(axis=1, keepdims=True)
