"""Any fitted head as Keras built-in layers: features in, class probabilities out, the same numbers as the
head's `predict_proba` (to float32 rounding), so that a run exports as one servable model.

Every piece is a layer that ships with Keras (Dense, Normalization, UnitNormalization, Multiply, Add,
Subtract, Rescaling, ReLU, Activation, Softmax, GlobalMaxPooling1D, Reshape): the saved model loads with
`keras.models.load_model` on a machine without featpipe or scikit-learn. The head's layers compute in float64
(`EXACT`), as scikit-learn and the kNN head do; the backbone before them keeps its own precision.

- standardisation: `featpipe.model_parts.standardize_layers` (exact at any scale); L2: UnitNormalization;
- logreg: one Dense (softmax; sigmoid for two classes; the streamed solver's one-vs-rest sigmoids are
  normalised as scikit-learn does, through log_sigmoid and a softmax);
- linear-svm / svm: the decision function as layers, then the calibration fitted on validation (Platt's
  per-class sigmoids normalised like scikit-learn's CalibratedClassifierCV, or one temperature);
- svm: the RBF kernel against the support vectors (or the Nystroem landmarks, then its normalisation
  matrix) from |x|^2 - 2 x.c + |c|^2; the one-vs-one decisions are turned into scikit-learn's one-vs-rest
  values (votes + softsign(summed confidences) / 3), a vote being a ReLU capped at 1 on a steep ramp;
- knn: cosine similarities against the training rows (a constant Dense kernel); the k nearest are found by
  k rounds of "take the row maximum, mark the rows equal to it, push them down"; a softmax of similarity / T
  over the marked rows, summed per class by a one-hot Dense, gives the weighted votes. Two training rows with
  exactly the same similarity to a query (duplicate training images) are marked in the same round, so the
  export then counts one neighbour more than k where the head picks one of them: the only case where the two
  differ by more than rounding.
"""

from __future__ import annotations

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from featpipe.errors import FeatpipeError
from featpipe.heads.estimators import PlattScaled
from featpipe.model_parts import class_probabilities, standardize_layers

# A vote's ramp: decisions further than 1e-30 from zero count fully (decisions are O(1) to O(1e3)).
STEEP = 1e30
# k-nearest rounds: similarities (in [-1, 1]) differing by more than 1e-12 are told apart; rows already
# taken are pushed down by 1e4, below any similarity; rows not taken get a logit 1e9 below the others.
MARK_SLOPE = 1e12
TAKEN_OFFSET = 1e4
MASKED_LOGIT = 1e9
# Every head layer computes in float64, as scikit-learn does: in float32, |x|^2 - 2 x.c + |c|^2 of an RBF kernel
# on 2,048 features was off by 4e-6 in the probabilities, and kNN similarities swapped near-tied neighbours.
EXACT = {"dtype": "float64"}


def dense(x, kernel, bias=None, activation=None, name=None):
    """A frozen float64 Dense layer with the given weights."""
    kernel = np.asarray(kernel, dtype=np.float64)
    layer = keras.layers.Dense(kernel.shape[1], activation=activation, use_bias=bias is not None, **EXACT,
                               trainable=False, name=name)
    out = layer(x)
    layer.set_weights([kernel] + ([] if bias is None else [np.asarray(bias, dtype=np.float64).ravel()]))
    return out


def pooled(x):
    """Spatial maps / token sequences averaged, as the heads' `as_matrix` does."""
    if len(x.shape) == 4:
        return keras.layers.GlobalAveragePooling2D(name="head_avg_pool", **EXACT)(x)
    if len(x.shape) == 3:
        return keras.layers.GlobalAveragePooling1D(name="head_avg_pool", **EXACT)(x)
    return x


def normalized(step, x):
    if isinstance(step, StandardScaler):
        for layer in standardize_layers(step.mean_, step.scale_, dtype="float64"):
            x = layer(x)
        return x
    if isinstance(step, Normalizer):
        return keras.layers.UnitNormalization(name="l2_normalize", **EXACT)(x)
    return x  # FunctionTransformer(): identity


def linear_decision(model, x):
    """Decision values of a linear scikit-learn classifier: (n, 1) for two classes, else (n, k)."""
    return dense(x, np.asarray(model.coef_).T, model.intercept_)


def rbf_kernel(x, centres: np.ndarray, gamma: float):
    """exp(-gamma |x - c|^2) for each centre c, as (n, m)."""
    squares = dense(keras.layers.Multiply(**EXACT)([x, x]), np.full((centres.shape[1], 1), -gamma))
    cross = dense(x, 2 * gamma * centres.T, -gamma * (centres**2).sum(axis=1))
    return keras.layers.Activation("exponential", **EXACT)(keras.layers.Add(**EXACT)([cross, squares]))


def svc_decision(classifier, x):
    """`featpipe.heads.svm.RBFKernelSVC.decision_function` (scikit-learn SVC, one-vs-rest shape)."""
    svc = classifier.svc_
    K = rbf_kernel(x, classifier.support_vectors_, classifier.gamma_)
    n_classes = len(svc.classes_)
    if n_classes == 2:
        return dense(K, svc.dual_coef_[:1].T, svc.intercept_[:1])
    # One-vs-one decisions from libsvm's layout: the dual coefficients of pair (i, j) are row j-1 for class i's
    # support vectors and row i for class j's.
    ends = np.cumsum(svc.n_support_)
    starts = ends - svc.n_support_
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    coef = np.zeros((len(svc.dual_coef_[0]), len(pairs)))
    for p, (i, j) in enumerate(pairs):
        coef[starts[i]:ends[i], p] = svc.dual_coef_[j - 1, starts[i]:ends[i]]
        coef[starts[j]:ends[j], p] = svc.dual_coef_[i, starts[j]:ends[j]]
    decisions = dense(K, coef, svc.intercept_)
    # scikit-learn's _ovr_decision_function: pair (i, j) votes for j when its decision is < 0, else for i;
    # summed confidences (+decision for i, -decision for j) are squashed to (-1/3, 1/3) and added to the votes.
    votes_for_j = keras.layers.ReLU(max_value=1.0, **EXACT)(keras.layers.Rescaling(-STEEP, **EXACT)(decisions))
    vote_matrix, sign = np.zeros((len(pairs), n_classes)), np.zeros((len(pairs), n_classes))
    first = np.zeros(n_classes)
    for p, (i, j) in enumerate(pairs):
        vote_matrix[p, i], vote_matrix[p, j], first[i] = -1, 1, first[i] + 1
        sign[p, i], sign[p, j] = 1, -1
    votes = dense(votes_for_j, vote_matrix, first)
    confidence = keras.layers.Activation("softsign", **EXACT)(dense(decisions, sign))
    return keras.layers.Add(**EXACT)([votes, keras.layers.Rescaling(1 / 3, **EXACT)(confidence)])


def decision(pipeline: Pipeline, x):
    """Decision values of a head's Pipeline[normalize, classify]."""
    x = normalized(pipeline.named_steps["normalize"], x)
    classifier = pipeline.named_steps["classify"]
    if isinstance(classifier, Pipeline):  # Nystroem features, then a linear SVM
        mapping = classifier.named_steps["nystroem"]
        x = dense(rbf_kernel(x, mapping.components_, mapping.gamma), mapping.normalization_.T)
        return linear_decision(classifier.named_steps["classify"], x)
    if hasattr(classifier, "svc_"):
        return svc_decision(classifier, x)
    return linear_decision(classifier, x)


def normalized_sigmoids(z):
    """sigmoid(z_i) / sum_j sigmoid(z_j) (scikit-learn's one-vs-rest probabilities), as softmax(log_sigmoid)."""
    return keras.layers.Softmax(**EXACT)(keras.layers.Activation("log_sigmoid", **EXACT)(z))


def calibrated(calibrator, z, n_classes: int):
    """The probabilities a CalibratedClassifierCV (one calibrated classifier) computes from decision values z."""
    (fitted,) = calibrator.calibrated_classifiers_
    if fitted.method == "temperature":
        beta = float(fitted.calibrators[0].beta_)
        if n_classes == 2:  # decisions f are the logits (-f, f): softmax gives sigmoid(2 beta f)
            return class_probabilities(dense(z, [[2 * beta]], [0.0], activation="sigmoid"))
        return dense(z, beta * np.eye(n_classes), np.zeros(n_classes), activation="softmax")
    a = np.array([c.a_ for c in fitted.calibrators])
    b = np.array([c.b_ for c in fitted.calibrators])
    if n_classes == 2:  # p1 = sigmoid(-(a f + b)), p0 = 1 - p1
        return class_probabilities(dense(z, -a[None], -b, activation="sigmoid"))
    return normalized_sigmoids(dense(z, np.diag(-a), -b))


def sklearn_probabilities(model, x, n_classes: int):
    if isinstance(model, PlattScaled):
        return calibrated(model.calibrator, decision(model.model, x), n_classes)
    classifier = model.named_steps["classify"]
    z = decision(model, x)
    if n_classes == 2:
        return class_probabilities(keras.layers.Activation("sigmoid", **EXACT)(z))
    if isinstance(classifier, LogisticRegression):
        return keras.layers.Softmax(**EXACT)(z)
    if isinstance(classifier, SGDClassifier):
        return normalized_sigmoids(z)
    raise FeatpipeError(f"internal: no Keras form for {type(classifier).__name__}")


def knn_probabilities(head, x):
    """Float64 matters most here: in float32 the similarities of a query to thousands of training rows differ
    from the head's by ~1e-7, enough to swap near-tied neighbours at the k-th place (measured: 4e-3 on the
    probabilities for 2,000 random rows of 2,048 features; 1e-15 in float64)."""
    reference = head.model_
    rows = np.concatenate(list(reference.blocks()))  # L2-normalised, float32 as saved
    k, n_rows = head.n_neighbors_, len(rows)
    x = keras.layers.UnitNormalization(name="l2_normalize", **EXACT)(x)
    sims = dense(x, rows.T, name="cosine_similarity")
    remaining, taken = sims, None
    for _ in range(k):
        best = keras.layers.GlobalMaxPooling1D(**EXACT)(keras.layers.Reshape((n_rows, 1), **EXACT)(remaining))
        gap = keras.layers.Subtract(**EXACT)([remaining, best])  # <= 0, 0 at the maximum
        mark = keras.layers.ReLU(max_value=1.0, **EXACT)(keras.layers.Rescaling(MARK_SLOPE, offset=1.0, **EXACT)(gap))
        remaining = keras.layers.Add(**EXACT)([remaining, keras.layers.Rescaling(-TAKEN_OFFSET, **EXACT)(mark)])
        taken = mark if taken is None else keras.layers.Add(**EXACT)([taken, mark])
    logits = keras.layers.Add(**EXACT)([keras.layers.Rescaling(1 / head.temperature_, **EXACT)(sims),
                                        keras.layers.Rescaling(MASKED_LOGIT, offset=-MASKED_LOGIT, **EXACT)(taken)])
    weights = keras.layers.Softmax(name="neighbour_weights", **EXACT)(logits)
    return dense(weights, np.eye(len(head.classes_))[reference.labels], name="class_votes")


def head_probabilities(head, features):
    """Class probabilities (n, n_classes) of a fitted scikit-learn or kNN head, as layers on `features`."""
    x = pooled(features)
    if head.name == "knn":
        return knn_probabilities(head, x)
    return sklearn_probabilities(head.model_, x, len(head.classes_))
