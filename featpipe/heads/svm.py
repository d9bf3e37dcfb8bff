"""An RBF-kernel SVM head, C and gamma chosen on the validation split.

libsvm evaluates the kernel one pair of rows at a time, which on 2,048-wide features costs seconds per fit;
here the kernel matrices come from BLAS instead (a precomputed-kernel SVC), and the squared distances are
computed once for the whole grid. The fitted model keeps only its support vectors.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel
from sklearn.svm import SVC

from featpipe.heads.base import POSITIVE, Param
from featpipe.heads.estimators import SklearnHead, c_param, normalize_param

# Past this many training rows the n x n kernel (8 bytes per entry, ~3 GiB at 20k) dominates time and memory.
QUADRATIC_ROWS = 20_000
# Rows predicted at a time: bounds the (rows x training rows) kernel block.
PREDICT_ROWS = 1024


def resolve_gamma(gamma, X: np.ndarray) -> float:
    """scikit-learn's gamma="scale": 1 / (n_features * X.var())."""
    return 1.0 / (X.shape[1] * X.var()) if gamma == "scale" else float(gamma)


class RBFKernelSVC(ClassifierMixin, BaseEstimator):
    """``SVC(kernel="rbf")`` with the kernel computed by BLAS; same decision function."""

    def __init__(self, C=1.0, gamma="scale", random_state=None):
        self.C = C
        self.gamma = gamma
        self.random_state = random_state

    def fit(self, X, y, sq_distances=None):
        """`sq_distances`: X's squared pairwise distances, when the caller has them already."""
        X = np.asarray(X, dtype=np.float64)
        self.gamma_ = resolve_gamma(self.gamma, X)
        sq = euclidean_distances(X, squared=True) if sq_distances is None else sq_distances
        self.svc_ = SVC(C=self.C, kernel="precomputed", random_state=self.random_state)
        self.svc_.fit(np.exp(-self.gamma_ * sq), y)
        self.support_vectors_ = X[self.svc_.support_]
        self.n_fit_rows_ = len(X)
        self.classes_ = self.svc_.classes_
        return self

    def _kernel(self, X: np.ndarray) -> np.ndarray:
        # The precomputed SVC wants one column per training row but only reads the support vectors' columns.
        K = np.zeros((len(X), self.n_fit_rows_))
        K[:, self.svc_.support_] = rbf_kernel(X, self.support_vectors_, gamma=self.gamma_)
        return K

    def _chunked(self, method, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return np.concatenate([method(self._kernel(X[i : i + PREDICT_ROWS])) for i in range(0, len(X), PREDICT_ROWS)])

    def decision_function(self, X) -> np.ndarray:
        return self._chunked(self.svc_.decision_function, X)

    def predict(self, X) -> np.ndarray:
        return self._chunked(self.svc_.predict, X)


class SVMHead(SklearnHead):
    """StandardScaler + RBF SVM (one-vs-one); probabilities by Platt scaling on validation."""

    name = "svm"
    calibrated = True
    PARAMS = {
        "C": c_param([0.1, 1.0, 10.0, 100.0]),
        "gamma": Param(float, ["scale"], grid=True, choices=("scale",), rule=POSITIVE),
        "normalize": normalize_param("standard"),
    }

    def _classifier(self, params: dict):
        return RBFKernelSVC(C=params["C"], gamma=params["gamma"], random_state=self.seed)

    def _fitter(self, X, y, X_val):
        if len(X) > QUADRATIC_ROWS:
            warnings.warn(
                "svm: an RBF SVM's time and memory grow quadratically with the training rows (an n x n kernel); "
                "past ~20,000 rows expect minutes and gigabytes, or use logreg / linear-svm",
                RuntimeWarning, stacklevel=2,
            )
        sq_train = euclidean_distances(X, squared=True)
        sq_val = euclidean_distances(X_val, X, squared=True)

        def fit(params):
            classifier = self._classifier(params).fit(X, y, sq_distances=sq_train)
            return classifier, classifier.svc_.predict(np.exp(-classifier.gamma_ * sq_val))

        return fit
