"""Linear probes: logistic regression and a linear SVM, C chosen on the validation split.

Each fits in memory with scikit-learn's exact solver when its features fit under `max_memory`, and
otherwise streams them in batches (`solver="sgd"`, see `featpipe.heads.streaming`), with the same C grid
mapped to SGD's alpha and the same selection on validation.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from featpipe.heads.base import AT_LEAST_ONE, POSITIVE, CachedSplit, InvalidInput, Param, format_bytes, store_params
from featpipe.heads.estimators import (
    CALIBRATION, LOG_C_GRID, VALIDATION_FRACTION, SklearnHead, c_param, matrix_bytes, normalize_param,
)
from featpipe.heads.streaming import sgd_evaluator


class LinearHead(SklearnHead):
    """What logistic regression and the linear SVM share: choosing between the in-memory and the SGD solver."""

    streams = True
    exact_solver: ClassVar[str]  # the in-memory solver's name, a value of `solver`
    sgd_loss: ClassVar[str]  # the SGDClassifier loss of the same model

    @staticmethod
    def linear_params(exact_solver: str) -> dict[str, Param]:
        return {
            "C": c_param(),
            "max_iter": Param(int, rule=AT_LEAST_ONE),
            "tol": Param(float, rule=POSITIVE),
            "normalize": normalize_param(),
            "solver": Param(str, choices=("auto", exact_solver, "sgd")),
            "epochs": Param(int, rule=AT_LEAST_ONE),
            "validation_fraction": VALIDATION_FRACTION,
        }

    def can_stream(self) -> bool:
        return self.params["solver"] != self.exact_solver

    def _solver(self, solver: str, X, X_val) -> tuple[str, str]:
        """(solver, why): the exact solver when the features fit in memory, else SGD on batches."""
        streamed = isinstance(X, CachedSplit) or isinstance(X_val, CachedSplit)
        # float64 copy + its normalised copy, of train and validation; the solver's own state is small.
        needed = 2 * (matrix_bytes(X) + matrix_bytes(X_val))
        budget = self.memory_budget()
        if solver == self.exact_solver and streamed:
            raise InvalidInput(f"{self.name}: solver {solver} needs the features in memory; use solver=sgd or auto")
        if solver != "auto":
            return solver, "chosen"
        if streamed:
            return "sgd", "features streamed from the cache"
        if needed > budget:
            return "sgd", f"in-memory fit needs about {format_bytes(needed)}, over max_memory {format_bytes(budget)}"
        return self.exact_solver, f"in-memory fit needs about {format_bytes(needed)}"

    def _evaluator(self, X, y, X_val, y_val, params):
        solver, why = self._solver(params["solver"], X, X_val)
        self.solver_ = {"solver": solver, "reason": why}
        if solver == "sgd":
            self.solver_.update(loss=self.sgd_loss, alpha="1 / (C * n_train)", epochs=params["epochs"], average=True)
            return sgd_evaluator(X, y, X_val, y_val, params, self.sgd_loss, self._seed())
        return super()._evaluator(X, y, X_val, y_val, params)

    def _adopt(self, best, X_val, y_val) -> None:
        # Iterations of the selected fit (scikit-learn's n_iter_); SGD's are its passes over train.
        sgd = self.solver_["solver"] == "sgd"
        self.n_iter_ = self.solver_["epochs"] if sgd else int(np.max(best.named_steps["classify"].n_iter_))
        super()._adopt(best, X_val, y_val)
        self.selection_["solver"] = self.solver_


class LogRegHead(LinearHead):
    """StandardScaler + multinomial LogisticRegression (lbfgs), or one-vs-rest log-loss SGD when streaming."""

    name = "logreg"
    exact_solver = "lbfgs"
    sgd_loss = "log_loss"
    PARAMS = LinearHead.linear_params("lbfgs")

    def __init__(self, C=LOG_C_GRID, max_iter=1000, tol=1e-4, normalize="standard", solver="auto", epochs=10,
                 validation_fraction=0.2, random_state=0, max_memory=None):
        store_params(self, locals())

    def seed_independent(self) -> bool:
        # lbfgs is deterministic; SGD shuffles by the seed. The hold-out without X_val is seeded too.
        return self.solver_["solver"] == "lbfgs" and self.selection_["validation"]["source"] == "given"

    def _classifier(self, params: dict):
        return LogisticRegression(C=params["C"], max_iter=params["max_iter"], tol=params["tol"],
                                  random_state=self._seed())

    def _fitter(self, X, y, X_val, params):
        """Each grid point starts from the previous point's solution, as LogisticRegressionCV walks its C
        path: the optimum is the same (the loss is convex) and reaching it takes about half the iterations."""
        previous = None

        def fit(point):
            nonlocal previous
            classifier = self._classifier(point)
            if previous is not None:
                classifier.set_params(warm_start=True)
                classifier.coef_, classifier.intercept_ = previous.coef_.copy(), previous.intercept_.copy()
            previous = classifier.fit(X, y)
            return classifier, classifier.predict(X_val)

        return fit


class LinearSVMHead(LinearHead):
    """StandardScaler + LinearSVC (one-vs-rest, squared hinge), or squared-hinge SGD when streaming;
    probabilities by Platt scaling on validation (or, with calibration=temperature, one temperature).

    The grid stops at C=1: on standardised wide features larger C only overfits, and the dual
    coordinate-descent solver slows down as C grows. tol 1e-3 (scikit-learn's default is 1e-4, liblinear's
    own 0.1) selects the same C and gives the same accuracy in the benchmark, ~15% faster.
    """

    name = "linear-svm"
    calibrated = True
    exact_solver = "liblinear"
    sgd_loss = "squared_hinge"
    PARAMS = {**LinearHead.linear_params("liblinear"), "calibration": CALIBRATION}

    def __init__(self, C=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), max_iter=1000, tol=1e-3, normalize="standard",
                 solver="auto", epochs=10, calibration="platt", validation_fraction=0.2, random_state=0,
                 max_memory=None):
        store_params(self, locals())

    def _classifier(self, params: dict):
        return LinearSVC(C=params["C"], max_iter=params["max_iter"], tol=params["tol"], random_state=self._seed())
