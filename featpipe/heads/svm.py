"""An RBF-kernel SVM head, C and gamma chosen on the validation split; Nystroem features past a size.

libsvm evaluates the kernel one pair of rows at a time, which on 2,048-wide features costs seconds per fit;
here the kernel matrices come from BLAS instead (a precomputed-kernel SVC), and the squared distances are
computed once for the whole grid. The fitted model keeps only its support vectors.

The exact kernel costs n^2 memory and roughly n^2 to n^3 time. Before any kernel is allocated the head
estimates both: past `max_exact_rows` training rows or `max_memory` it fits the same model on a Nystroem
approximation of the kernel (`n_components` landmark rows, then a linear SVM trained by averaged SGD on the
hinge loss, every C in the same passes: liblinear's exact solvers take minutes on 100,000 x 1,000 Nystroem
features and copy them), and records that; an exact
fit that was asked for but cannot fit, or an approximation that itself exceeds `max_memory`, is refused at
once with the estimate and the alternative.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.kernel_approximation import Nystroem
from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from featpipe.heads.base import AT_LEAST_ONE, POSITIVE, InvalidInput, Param, format_bytes, format_seconds, store_params
from featpipe.heads.estimators import CALIBRATION, VALIDATION_FRACTION, SklearnHead, c_param, matrix_bytes, normalize_param
from featpipe.heads.streaming import train_sgd

# Training rows past which "auto" approximates: the exact kernel alone is ~3 GiB and minutes per C at 20k.
MAX_EXACT_ROWS = 20_000
# Rows predicted at a time: bounds the (rows x training rows) kernel block.
PREDICT_ROWS = 1024
# Seconds per squared training row and grid point of an exact fit, measured on a 2-core CPU (bench_heads):
# a rough guide for the error message, not a promise.
SECONDS_PER_ROW_PAIR = 1e-7


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


def exact_cost(n: int, n_val: int, grid_points: int) -> tuple[int, float]:
    """(bytes, seconds) of the exact fit: squared distances and one kernel, train x train and validation x train."""
    return 8 * 2 * n * (n + n_val), SECONDS_PER_ROW_PAIR * grid_points * n * n


def nystroem_bytes(n: int, n_val: int, components: int) -> int:
    """The Nystroem features of train and validation (SGD trains on them in place), plus the kernel block that
    transforming train allocates on the way (bench_heads: 1.95 GiB measured at 100,000 + 50,000 rows x 1,000)."""
    return 8 * components * (2 * n + n_val)


class SVMHead(SklearnHead):
    """StandardScaler + RBF SVM (one-vs-one; exact, or Nystroem + linear SVM at scale);
    probabilities by Platt scaling on validation (or, with calibration=temperature, one temperature)."""

    name = "svm"
    calibrated = True
    PARAMS = {
        "C": c_param(),
        "gamma": Param(float, grid=True, choices=("scale",), rule=POSITIVE),
        "normalize": normalize_param(),
        "kernel": Param(str, choices=("auto", "exact", "nystroem")),
        "n_components": Param(int, rule=AT_LEAST_ONE),
        "max_exact_rows": Param(int, rule=AT_LEAST_ONE),
        "epochs": Param(int, rule=AT_LEAST_ONE),
        "calibration": CALIBRATION,
        "validation_fraction": VALIDATION_FRACTION,
    }

    def __init__(self, C=(0.1, 1.0, 10.0, 100.0), gamma=("scale",), normalize="standard", kernel="auto",
                 n_components=1000, max_exact_rows=MAX_EXACT_ROWS, epochs=10, calibration="platt",
                 validation_fraction=0.2, random_state=0, max_memory=None):
        store_params(self, locals())

    def _kernel_choice(self, params: dict, n: int, n_val: int, features: int) -> dict:
        """How the kernel will be computed, decided from estimates before anything large is allocated."""
        budget = self.memory_budget()
        exact_bytes, exact_seconds = exact_cost(n, n_val, len(self.grid_points()))
        exact_bytes += features
        estimate = f"about {format_bytes(exact_bytes)} and {format_seconds(exact_seconds)}"
        wanted = params["kernel"]
        fits = exact_bytes <= budget
        if wanted == "exact" or (wanted == "auto" and fits and n <= params["max_exact_rows"]):
            if not fits:
                raise InvalidInput(
                    f"svm: an exact RBF kernel on {n:,} training rows needs {estimate}, over max_memory "
                    f"{format_bytes(budget)}; use --param kernel=auto (Nystroem approximation), or --head linear-svm")
            return {"method": "exact", "estimate": estimate}
        components = min(params["n_components"], n)
        needed = nystroem_bytes(n, n_val, components) + features
        if needed > budget:
            raise InvalidInput(
                f"svm: even a {components}-component Nystroem approximation on {n:,} training rows needs about "
                f"{format_bytes(needed)}, over max_memory {format_bytes(budget)}; lower --param n_components or use "
                "--head linear-svm / logreg (they stream from the cache)")
        reason = "asked for" if wanted == "nystroem" else (
            f"exact kernel would need {estimate}" + ("" if fits else f", over max_memory {format_bytes(budget)}")
            + (f"; over max_exact_rows {params['max_exact_rows']:,}" if n > params["max_exact_rows"] else ""))
        return {"method": "nystroem", "n_components": components, "linear_model": "hinge-loss averaged SGD",
                "epochs": params["epochs"], "reason": reason}

    def _evaluator(self, X, y, X_val, y_val, params):
        # Decide before as_matrix's copies: those are counted in the estimate.
        self.kernel_ = self._kernel_choice(params, len(X), len(X_val), 2 * (matrix_bytes(X) + matrix_bytes(X_val)))
        return super()._evaluator(X, y, X_val, y_val, params)

    def _classifier(self, params: dict):
        return RBFKernelSVC(C=params["C"], gamma=params["gamma"], random_state=self._seed())

    def _fitter(self, X, y, X_val, params):
        if self.kernel_["method"] == "nystroem":
            return self._nystroem_fitter(X, y, X_val, params)
        sq_train = euclidean_distances(X, squared=True)
        sq_val = euclidean_distances(X_val, X, squared=True)

        def fit(point):
            classifier = self._classifier(point).fit(X, y, sq_distances=sq_train)
            return classifier, classifier.svc_.predict(np.exp(-classifier.gamma_ * sq_val))

        return fit

    def _nystroem_fitter(self, X, y, X_val, params: dict):
        """Nystroem features once per gamma (the grid's inner loop is C), then every C's linear SVM on them."""
        seed, Cs, per_gamma = self._seed(), list(dict.fromkeys(params["C"])), {}

        def fit(point):
            gamma = resolve_gamma(point["gamma"], X)
            if gamma not in per_gamma:
                per_gamma.clear()  # one gamma's features at a time: the memory estimate counts one set
                mapping = Nystroem(gamma=gamma, n_components=self.kernel_["n_components"], random_state=seed).fit(X)
                models = train_sgd(mapping.transform(X), y, None, Cs, params["epochs"], "hinge", seed)
                per_gamma[gamma] = (mapping, mapping.transform(X_val), models)
            mapping, Z_val, models = per_gamma[gamma]
            classifier = models[Cs.index(point["C"])]
            return Pipeline([("nystroem", mapping), ("classify", classifier)]), classifier.predict(Z_val)

        return fit

    def seed_independent(self) -> bool:
        # libsvm on a precomputed kernel without probability estimates draws nothing; Nystroem and SGD do.
        return self.kernel_["method"] == "exact" and self.selection_["validation"]["source"] == "given"

    def _adopt(self, best, X_val, y_val) -> None:
        super()._adopt(best, X_val, y_val)
        self.selection_["kernel"] = self.kernel_
