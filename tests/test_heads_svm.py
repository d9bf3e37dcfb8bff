"""featpipe.heads.svm: the RBF SVM head and its BLAS-kernel SVC."""

import numpy as np
import pytest
from sklearn.svm import SVC

import featpipe.heads.svm as svm_module
from featpipe.heads import load_head, make_head
from featpipe.heads.svm import RBFKernelSVC
from heads_fixtures import blobs, splits


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
    head = make_head("svm", {"gamma": "scale,0.01"}, seed=1).fit(*data["train"], *data["validation"])
    X, y = data["test"]
    assert (head.predict(X) == y).mean() > 0.85
    assert len(head.selection_["grid"]) == 8 and head.best_params_["gamma"] in ("scale", 0.01)
    again = make_head("svm", {"gamma": "scale,0.01"}, seed=1).fit(*data["train"], *data["validation"])
    np.testing.assert_array_equal(again.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(load_head(head.save(tmp_path)).predict_proba(X), head.predict_proba(X))


def test_warns_once_that_it_scales_quadratically(monkeypatch):
    monkeypatch.setattr(svm_module, "QUADRATIC_ROWS", 10)
    data = splits()
    with pytest.warns(RuntimeWarning, match="grow quadratically") as caught:
        make_head("svm", {"C": "1,10"}).fit(*data["train"], *data["validation"])
    assert len([w for w in caught if "quadratically" in str(w.message)]) == 1
