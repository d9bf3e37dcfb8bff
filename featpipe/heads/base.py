"""The head contract, its parameters, and the validation-grid search every head shares.

A head follows scikit-learn's habits: the constructor only stores (and checks) parameters; `fit(X, y,
X_val, y_val)` fits one model per grid point on train, keeps the one with the best validation accuracy
(ties go to the earlier point) and returns self; learned state ends in ``_``. The selected model is the
one fitted on train alone, never refitted on train + validation, so the validation score it reports is
the one it was chosen by and the test split stays untouched until the single final evaluation.
"""

from __future__ import annotations

import abc
import itertools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from featpipe.errors import FeatpipeError
from featpipe.runs import read_json, write_json
from featpipe.store import FeatureCache

HEAD_FILE = "head.json"
NORMALIZE_CHOICES = ("none", "l2", "standard")
REFIT = "none: the selected model is the one fitted on train"

# (description, check) pairs for numeric parameters.
POSITIVE = ("> 0", lambda v: v > 0)
AT_LEAST_ONE = (">= 1", lambda v: v >= 1)
NON_NEGATIVE = (">= 0", lambda v: v >= 0)
FRACTION = ("in [0, 1)", lambda v: 0 <= v < 1)


@dataclass(frozen=True)
class Param:
    """One head parameter: its type, default, and whether it takes a grid of values to search."""

    kind: type  # float, int or str
    default: Any  # a list for grid parameters
    grid: bool = False
    choices: tuple[str, ...] = ()  # allowed words (the only values when kind is str)
    rule: tuple[str, Callable[[Any], bool]] | None = None

    def coerce(self, name: str, value: Any) -> Any:
        """A typed value (a list for grid parameters) from a typed value, a list, or ``"0.1,1,10"``."""
        items = value.split(",") if isinstance(value, str) else value
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        values = [self._one(name, item) for item in items]
        if not values:
            raise FeatpipeError(f"parameter {name} needs a value")
        if self.grid:
            return values
        if len(values) > 1:
            raise FeatpipeError(f"parameter {name} takes one value, got {len(values)}: {value!r}")
        return values[0]

    def _one(self, name: str, item: Any) -> Any:
        item = item.strip() if isinstance(item, str) else item
        if item in self.choices:
            return item
        expected = " or ".join(filter(None, [", ".join(self.choices), "" if self.kind is str else self.kind.__name__]))
        try:
            if self.kind is str or isinstance(item, bool):
                raise ValueError
            number = self.kind(item)
        except (TypeError, ValueError):
            raise FeatpipeError(f"parameter {name} must be {expected}, got {item!r}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise FeatpipeError(f"parameter {name} must be a finite number, got {item!r}")
        if self.rule and not self.rule[1](number):
            raise FeatpipeError(f"parameter {name} must be {self.rule[0]}, got {item!r}")
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

    def batches(self, rows: int) -> Iterator[np.ndarray]:
        with FeatureCache(self.path) as cache:
            for features, _ in cache.iter_batches(self.split, rows):
                yield features.astype(np.float32)


class Head(abc.ABC):
    """A classifier on cached features. Subclasses set `name`, `model_file`, `PARAMS` and the hooks."""

    name: ClassVar[str]
    model_file: ClassVar[str]
    PARAMS: ClassVar[dict[str, Param]]
    streams: ClassVar[bool] = False  # True when fit/predict_proba accept a CachedSplit
    memory_factor: ClassVar[float] = 1.0  # peak memory of in-memory training / the features' size as stored

    def __init__(self, seed: int = 0, **params):
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise FeatpipeError(
                f"unknown parameter {unknown[0]!r} for head {self.name}; known: {', '.join(self.PARAMS)}"
            )
        self.seed = int(seed)
        self.params = {key: spec.coerce(key, params.get(key, spec.default)) for key, spec in self.PARAMS.items()}

    def get_params(self) -> dict:
        return {"seed": self.seed, **self.params}

    def grid_points(self) -> list[dict]:
        """Every combination of the grid parameters' values, in the order given."""
        keys = [key for key, spec in self.PARAMS.items() if spec.grid]
        return [dict(zip(keys, values)) for values in itertools.product(*(self.params[k] for k in keys))]

    def fit(self, X, y, X_val, y_val) -> "Head":
        y, y_val = np.asarray(y), np.asarray(y_val)
        self.n_classes_ = count_classes(y)
        evaluate = self._evaluator(X, y, X_val, y_val)
        best, self.best_params_, grid = grid_search(self.grid_points(), lambda p: evaluate({**self.params, **p}))
        self.selection_ = {"metric": "accuracy", "grid": grid, "best_params": self.best_params_, "refit": REFIT}
        self._adopt(best, X_val, y_val)
        return self

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    @abc.abstractmethod
    def predict_proba(self, X) -> np.ndarray:
        """(n, n_classes) class probabilities."""

    @abc.abstractmethod
    def _evaluator(self, X, y, X_val, y_val) -> Callable[[dict], tuple[Any, float]]:
        """A function: full params of one grid point -> (fitted model, validation accuracy)."""

    def _adopt(self, best, X_val, y_val) -> None:
        """Keep the selected model (subclasses may calibrate it or unpack extra state)."""
        self.model_ = best

    @abc.abstractmethod
    def _save_model(self, path: Path) -> None: ...

    @abc.abstractmethod
    def _load_model(self, path: Path): ...

    def save(self, directory) -> Path:
        """The model file plus head.json (name, params, seed and the JSON-able learned state)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model(directory / self.model_file)
        state = {k: v for k, v in vars(self).items() if k.endswith("_") and k != "model_"}
        write_json(directory / HEAD_FILE, {"head": self.name, "params": self.params, "seed": self.seed,
                                           "state": state})
        return directory

    @classmethod
    def load(cls, directory) -> "Head":
        directory = Path(directory)
        saved = read_head_file(directory)
        head = cls(seed=saved["seed"], **saved["params"])
        vars(head).update(saved["state"])
        head.model_ = head._load_model(directory / cls.model_file)
        return head


def read_head_file(directory) -> dict:
    return read_json(Path(directory) / HEAD_FILE)


def count_classes(y: np.ndarray) -> int:
    """Labels must be 0..k-1 with every class present: a head cannot learn a class it never saw."""
    present = np.unique(y)
    if len(present) < 2 or not np.array_equal(present, np.arange(len(present))):
        raise FeatpipeError(f"training labels must be 0..k-1 (k >= 2) with every class present, got {present.tolist()}")
    return len(present)


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
