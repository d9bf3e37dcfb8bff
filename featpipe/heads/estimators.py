"""What the scikit-learn heads share: in-memory feature matrices, normalisation, calibration, joblib files."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable, ClassVar

import joblib
import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler

from featpipe.heads.base import NORMALIZE_CHOICES, POSITIVE, Head, Param

# The linear-probe sweep of CLIP / DINOv2: C on a log grid, chosen on validation.
LOG_C_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]


def c_param(default: list[float]) -> Param:
    return Param(float, default, grid=True, rule=POSITIVE)


def normalize_param(default: str) -> Param:
    return Param(str, default, choices=NORMALIZE_CHOICES)


def as_matrix(X) -> np.ndarray:
    """(n, d) float64; spatial maps / token sequences (pooling none) are averaged, as --pooling avg would.

    float64 because scikit-learn's solvers work in it: lbfgs on float32 input recasts X every iteration.
    """
    X = np.asarray(X, dtype=np.float64)
    return X.mean(axis=tuple(range(1, X.ndim - 1))) if X.ndim > 2 else X


def normalizer(kind: str):
    return {"none": FunctionTransformer(), "l2": Normalizer(), "standard": StandardScaler()}[kind]


class SklearnHead(Head):
    """A scikit-learn classifier after a normalisation step fitted once on train.

    Heads without probabilities of their own (`calibrated`) get Platt scaling fitted on the validation
    split, after the grid search, on the frozen selected model: their validation log loss is optimistic, the
    test split stays untouched.
    """

    model_file = "model.joblib"
    memory_factor = 5.0  # float32 features as stored + their float64 copy + its normalised copy
    calibrated: ClassVar[bool] = False

    @abc.abstractmethod
    def _classifier(self, params: dict):
        """An unfitted estimator for one grid point."""

    def _fitter(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray) -> Callable[[dict], tuple]:
        """params -> (fitted classifier, its predictions on X_val); X and X_val are normalised."""

        def fit(params):
            classifier = self._classifier(params).fit(X, y)
            return classifier, classifier.predict(X_val)

        return fit

    def _evaluator(self, X, y, X_val, y_val):
        X, X_val = as_matrix(X), as_matrix(X_val)
        scaler = normalizer(self.params["normalize"]).fit(X)
        fit = self._fitter(scaler.transform(X), y, scaler.transform(X_val))

        def evaluate(params):
            classifier, predicted = fit(params)
            return Pipeline([("normalize", scaler), ("classify", classifier)]), accuracy_score(y_val, predicted)

        return evaluate

    def _adopt(self, best, X_val, y_val) -> None:
        if self.calibrated:
            # The frozen model is never refitted, so one "fold" holding every validation row is the
            # whole calibration set (the default 5 folds would only fail on small classes).
            rows = np.arange(len(y_val))
            calibration = CalibratedClassifierCV(FrozenEstimator(best), method="sigmoid", cv=[(rows, rows)])
            best = calibration.fit(as_matrix(X_val), y_val)
            self.selection_["calibration"] = "sigmoid (Platt) on the validation split, after selection"
        self.model_ = best

    def predict_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(as_matrix(X))

    def _save_model(self, path: Path) -> None:
        joblib.dump(self.model_, path)

    def _load_model(self, path: Path):
        return joblib.load(path)
