"""What the scikit-learn heads share: feature matrices, normalisation, Platt calibration, chunked prediction."""

from __future__ import annotations

import abc
import logging
from pathlib import Path
from typing import Callable, ClassVar

import joblib
import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler

from featpipe.heads.base import (
    NORMALIZE_CHOICES, OPEN_FRACTION, POSITIVE, CachedSplit, Head, InvalidInput, Param, chunks, format_bytes,
)

log = logging.getLogger(__name__)

# The linear-probe sweep of CLIP / DINOv2: C on a log grid, chosen on validation.
LOG_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
VALIDATION_FRACTION = Param(float, rule=OPEN_FRACTION)


def c_param() -> Param:
    return Param(float, grid=True, rule=POSITIVE)


def normalize_param() -> Param:
    return Param(str, choices=NORMALIZE_CHOICES)


# How a head without probabilities of its own turns decision values into probabilities, fitted on validation.
CALIBRATION = Param(str, choices=("platt", "temperature"))
CALIBRATION_METHODS = {"platt": "sigmoid", "temperature": "temperature"}


def as_matrix(X) -> np.ndarray:
    """(n, d) float64; spatial maps / token sequences (pooling none) are averaged, as --pooling avg would.

    float64 because scikit-learn's solvers work in it: lbfgs on float32 input recasts X every iteration.
    """
    X = np.asarray(X, dtype=np.float64)
    return X.mean(axis=tuple(range(1, X.ndim - 1))) if X.ndim > 2 else X


def matrix_bytes(X) -> int:
    """Bytes of `as_matrix(X)`."""
    return 8 * len(X) * X.shape[-1]


def normalizer(kind: str):
    return {"none": FunctionTransformer(), "l2": Normalizer(), "standard": StandardScaler()}[kind]


def decision_values(model, X) -> np.ndarray:
    """(n, 1) for binary or (n, k) decision values, computed chunk by chunk (X: array or CachedSplit)."""
    parts = [np.asarray(model.decision_function(as_matrix(c)), dtype=np.float64) for c in chunks(X)]
    values = np.concatenate(parts)
    return values.reshape(len(values), -1)


class Decisions(ClassifierMixin, BaseEstimator):
    """Decision values already computed, passed through: lets CalibratedClassifierCV fit its sigmoids on
    decision values that were computed in chunks (or streamed from a cache)."""

    def __init__(self, n_classes=2):
        self.n_classes = n_classes

    def fit(self, X=None, y=None):
        self.classes_ = np.arange(self.n_classes)
        return self

    def decision_function(self, X):
        X = np.asarray(X)
        return X[:, 0] if X.shape[1] == 1 else X

    def predict(self, X):
        X = np.asarray(X)
        return (X[:, 0] > 0).astype(int) if X.shape[1] == 1 else X.argmax(axis=1)


def fit_calibrator(decisions: np.ndarray, y: np.ndarray, n_classes: int, method: str) -> CalibratedClassifierCV:
    """CalibratedClassifierCV fitted on decision values already computed ((n, 1) for two classes, else (n, k))."""
    # The frozen passthrough is never refitted, so one "fold" holding every row is the whole calibration set
    # (the default 5 folds would only fail on small classes).
    rows = np.arange(len(y))
    return CalibratedClassifierCV(FrozenEstimator(Decisions(n_classes).fit()), method=method,
                                  cv=[(rows, rows)]).fit(decisions, y)


def fitted_temperature(calibrator: CalibratedClassifierCV) -> float:
    """T of softmax(logits / T) from a method="temperature" calibrator (scikit-learn stores beta = 1 / T)."""
    (fitted,) = calibrator.calibrated_classifiers_
    return 1.0 / float(fitted.calibrators[0].beta_)


def scale_output_temperature(layer, hidden: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """Temperature scaling (Guo et al. 2017) of a Keras sigmoid / softmax Dense output `layer`, fitted on the
    validation rows whose inputs to the layer are `hidden`: the layer's weights are divided by T, so
    sigmoid(z / T) / softmax(z / T) is what the model computes from then on (saved, predicted, exported).
    Returns `temperature_record`'s dict."""
    kernel, bias = layer.get_weights()
    logits = np.asarray(hidden, dtype=np.float64) @ kernel + bias
    # One sigmoid logit z is the pair (0, z) ~ (-z/2, z/2), which scikit-learn reads as the decision f = z/2.
    decisions = logits / 2 if logits.shape[1] == 1 else logits
    temperature = fitted_temperature(fit_calibrator(decisions, y, n_classes, "temperature"))
    layer.set_weights([kernel / temperature, bias / temperature])
    scaled = decisions / temperature
    logits_pair = np.hstack([-scaled, scaled]) if scaled.shape[1] == 1 else scaled
    after = np.exp(logits_pair - logits_pair.max(axis=1, keepdims=True))
    return temperature_record(temperature, y, decisions, after / after.sum(axis=1, keepdims=True))


class PlattScaled:
    """A fitted classifier plus a calibration fitted on validation decision values: per-class sigmoids
    (Platt scaling, `method="sigmoid"`) or one temperature for the softmax of the decision values
    (`method="temperature"`, Guo et al. 2017; two classes' decision f is the logit pair (-f, f)).

    A calibration needs both outcomes of each class in the validation rows, and on a few rows it can come out
    decreasing, which would invert the model (every prediction flipped). Then none is kept: the probabilities are
    the logistic of the decision values (the same ranking and predictions as the model, not calibrated), and
    `fallback` says why."""

    def __init__(self, model, X_val, y_val: np.ndarray, n_classes: int, method: str = "sigmoid"):
        self.model = model
        self.fallback = _uncalibratable(y_val, n_classes)
        self.calibrator = None
        if self.fallback is None:
            calibrator = fit_calibrator(decision_values(model, X_val), y_val, n_classes, method)
            self.fallback = _inverting(calibrator, method, len(y_val))
            if self.fallback is None:
                self.calibrator = calibrator

    def predict_proba(self, X) -> np.ndarray:
        values = decision_values(self.model, X)
        if getattr(self, "calibrator", None) is not None:
            return self.calibrator.predict_proba(values)
        return logistic_proba(values)


def _uncalibratable(y_val: np.ndarray, n_classes: int) -> str | None:
    """Why a calibration cannot be fitted on these validation labels (a class with no row, or every row), or None."""
    counts = np.bincount(y_val, minlength=n_classes)
    if np.count_nonzero(counts) < 2:
        return f"the validation split has {len(y_val)} rows of one class: a calibration needs both outcomes"
    if n_classes > 2 and counts.min() == 0:
        return f"class {int(np.argmin(counts))} has no validation row: its calibration needs both outcomes"
    return None


def _inverting(calibrator: CalibratedClassifierCV, method: str, rows: int) -> str | None:
    """Why a fitted calibration would invert the model (a sigmoid or a temperature that falls with the decision
    value, as a few validation rows can give), or None."""
    if method == "temperature":
        temperature = fitted_temperature(calibrator)
        return None if temperature > 0 else f"the temperature fitted on {rows} validation rows is {temperature:.3g} <= 0"
    slopes = [c.a_ for c in calibrator.calibrated_classifiers_[0].calibrators]
    if all(a < 0 for a in slopes):  # p = 1 / (1 + exp(a f + b)) rises with f only when a < 0
        return None
    return f"the sigmoid fitted on {rows} validation rows would invert the model (slope {max(slopes):.3g} >= 0)"


def logistic_proba(values: np.ndarray) -> np.ndarray:
    """Probabilities from decision values without calibration: the logistic of each (one-vs-rest values
    normalised to sum to 1, as CalibratedClassifierCV does), so the predicted class is the model's own."""
    p = expit(values)
    if p.shape[1] == 1:
        return np.hstack([1 - p, p])
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.full_like(p, 1 / p.shape[1]), where=total > 0)


def temperature_record(temperature: float, y_val: np.ndarray, decisions: np.ndarray, calibrated: np.ndarray) -> dict:
    """What temperature scaling did on validation: the temperature, and ECE / log loss before and after.

    "Before" reads the decision values as logits at temperature 1 (softmax; a two-class decision f as the
    logits (-f, f)), the probabilities the scores would give uncalibrated."""
    from scipy.special import softmax
    from sklearn.metrics import log_loss

    from featpipe.metrics import calibration

    logits = np.hstack([-decisions, decisions]) if decisions.shape[1] == 1 else decisions
    before = softmax(logits, axis=1)
    labels = np.arange(calibrated.shape[1])
    return {
        "method": "temperature scaling (Guo et al. 2017), fitted on validation by log loss",
        "temperature": temperature,
        "validation_ece_before": calibration(y_val, before)["ece"],
        "validation_ece_after": calibration(y_val, calibrated)["ece"],
        "validation_log_loss_before": float(log_loss(y_val, np.clip(before, 1e-15, 1), labels=labels)),
        "validation_log_loss_after": float(log_loss(y_val, np.clip(calibrated, 1e-15, 1), labels=labels)),
    }


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

    def _fitter(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, params: dict) -> Callable[[dict], tuple]:
        """params -> (fitted classifier, its predictions on X_val); X and X_val are normalised."""

        def fit(point):
            classifier = self._classifier(point).fit(X, y)
            return classifier, classifier.predict(X_val)

        return fit

    def _in_memory(self, X, X_val) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(X, CachedSplit) or isinstance(X_val, CachedSplit):
            raise self._too_big(X, X_val)
        return as_matrix(X), as_matrix(X_val)

    def _too_big(self, X, X_val) -> Exception:
        needed = 2 * (matrix_bytes(X) + matrix_bytes(X_val))
        return InvalidInput(f"head {self.name} needs its features in memory (about {format_bytes(needed)}); "
                            "use logreg or linear-svm, which stream from the cache")

    def _evaluator(self, X, y, X_val, y_val, params):
        X, X_val = self._in_memory(X, X_val)
        scaler = normalizer(params["normalize"]).fit(X)
        fit = self._fitter(scaler.transform(X), y, scaler.transform(X_val), params)

        def evaluate(point):
            classifier, predicted = fit(point)
            return Pipeline([("normalize", scaler), ("classify", classifier)]), accuracy_score(y_val, predicted)

        return evaluate

    def _adopt(self, best, X_val, y_val) -> None:
        if self.calibrated:
            method = self.params["calibration"]
            best = PlattScaled(best, X_val, y_val, len(self.classes_), CALIBRATION_METHODS[method])
            described = {"platt": "sigmoid (Platt)", "temperature": "temperature scaling of the decision values"}
            if best.fallback is None:
                self.selection_["calibration"] = f"{described[method]} on the validation split, after selection"
            else:
                self.selection_["calibration"] = f"none: logistic of the decision values ({best.fallback})"
                log.warning("%s: probabilities not calibrated: %s", self.name, best.fallback)
            if method == "temperature" and best.fallback is None:
                self.selection_["temperature"] = temperature_record(
                    fitted_temperature(best.calibrator), y_val, decision_values(best.model, X_val),
                    best.predict_proba(X_val))
        self.model_ = best
        if self.calibrated:
            # Calibration can change the predicted class (one-vs-rest sigmoids): the model kept is scored again.
            predicted = np.concatenate([best.predict_proba(as_matrix(c)).argmax(axis=1) for c in chunks(X_val)])
            self.selection_["kept_validation_accuracy"] = float(accuracy_score(y_val, predicted))

    def _predict_proba(self, X) -> np.ndarray:
        return np.concatenate([self.model_.predict_proba(as_matrix(c)) for c in chunks(X)])

    def _save_model(self, path: Path) -> None:
        joblib.dump(self.model_, path)

    def _load_model(self, path: Path):
        return joblib.load(path)
