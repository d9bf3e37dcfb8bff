"""featpipe.heads.svm: the RBF SVM head and its BLAS-kernel SVC."""

import numpy as np
import pytest
from sklearn.svm import SVC

import featpipe.heads.svm as svm_module
from featpipe.heads import load_head, make_head
from featpipe.errors import FeatpipeError
from featpipe.heads.svm import RBFKernelSVC, exact_cost, nystroem_bytes
from heads_fixtures import blobs, splits, validation


@pytest.mark.parametrize("n_classes, gamma", [(2, "scale"), (3, 0.05)])
def test_kernel_svc_matches_libsvm_rbf(n_classes, gamma):
    X, y = blobs(80, dim=5, n_classes=n_classes, spread=3.0)
    X_new, _ = blobs(40, dim=5, n_classes=n_classes, seed=9, spread=3.0)
    ours = RBFKernelSVC(C=2.0, gamma=gamma).fit(X, y)
    reference = SVC(C=2.0, gamma=gamma, kernel="rbf").fit(X, y)
    assert len(ours.support_vectors_) == len(reference.support_) < len(X)
    np.testing.assert_allclose(ours.decision_function(X_new), reference.decision_function(X_new), atol=1e-6)
    np.testing.assert_array_equal(ours.predict(X_new), reference.predict(X_new))


def test_kernel_svc_predicts_in_chunks(monkeypatch):
    X, y = blobs(50, dim=4)
    model = RBFKernelSVC().fit(X, y)
    whole = model.decision_function(X)
    monkeypatch.setattr(svm_module, "PREDICT_ROWS", 7)
    np.testing.assert_array_equal(model.decision_function(X), whole)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_svm_head_learns_selects_and_round_trips(n_classes, tmp_path):
    data = splits(n_classes=n_classes, spread=2.5)
    head = make_head("svm", {"gamma": "scale,0.01"}, seed=1).fit(*data["train"], **validation(data))
    X, y = data["test"]
    assert (head.predict(X) == y).mean() > 0.85
    assert len(head.selection_["grid"]) == 8 and head.best_params_["gamma"] in ("scale", 0.01)
    again = make_head("svm", {"gamma": "scale,0.01"}, seed=1).fit(*data["train"], **validation(data))
    np.testing.assert_array_equal(again.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(load_head(head.save(tmp_path)).predict_proba(X), head.predict_proba(X))


def _svm(data, max_memory=None, **params):
    return make_head("svm", params, max_memory=max_memory).fit(*data["train"], **validation(data))


def test_past_max_exact_rows_the_kernel_is_approximated_and_recorded(tmp_path):
    data = splits(n_classes=3, spread=2.5)
    exact = _svm(data)
    assert exact.selection_["kernel"]["method"] == "exact"
    approx = _svm(data, max_exact_rows=50, n_components=40)
    kernel = approx.selection_["kernel"]
    assert kernel["method"] == "nystroem" and kernel["n_components"] == 40
    assert "over max_exact_rows 50" in kernel["reason"]
    X, y = data["test"]
    assert approx.score(X, y) >= exact.score(X, y) - 0.05 and approx.predict_proba(X).shape == (30, 3)
    loaded = load_head(approx.save(tmp_path))
    np.testing.assert_array_equal(loaded.predict_proba(X), approx.predict_proba(X))
    assert loaded.selection_["kernel"] == kernel


def test_over_max_memory_the_kernel_is_approximated_or_refused_with_the_estimate():
    data = splits(spread=2.5)  # 60 train + 30 validation rows: exact ~101 KiB, 20-component Nystroem ~28 KiB
    kernel = _svm(data, max_memory=60_000, n_components=20).selection_["kernel"]
    assert kernel["method"] == "nystroem" and "over max_memory 58.6 KiB" in kernel["reason"]
    with pytest.raises(FeatpipeError, match=r"^svm: an exact RBF kernel on 60 training rows needs about 101.2 KiB "
                                            r"and 0 s, over max_memory 58.6 KiB; use --param kernel=auto"):
        _svm(data, max_memory=60_000, kernel="exact")
    with pytest.raises(FeatpipeError, match=r"^svm: even a 60-component Nystroem approximation .* lower --param "
                                            r"n_components or use --head linear-svm / logreg"):
        _svm(data, max_memory=40_000)


def test_estimates_grow_as_the_kernel_does():
    small, large = exact_cost(1000, 500, 4), exact_cost(40_000, 10_000, 4)
    assert large[0] == 8 * 2 * 40_000 * 50_000 and large[0] / small[0] == pytest.approx(40 * 50 / 1.5)
    assert large[1] / small[1] == pytest.approx(1600)
    assert nystroem_bytes(40_000, 10_000, 1000) == 8 * 1000 * 90_000
