import numpy as np
import pytest

from featpipe.metrics import classification_metrics


def test_binary_metrics():
    y = [0, 0, 1, 1]
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    m = classification_metrics(y, proba, ["cat", "dog"])
    assert m["n"] == 4 and m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["per_class"]["dog"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["roc_auc"] == 1.0 and m["roc_curve"]["tpr"][-1] == 1.0
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))


def test_multiclass_metrics_and_absent_class():
    proba = np.eye(3)[[0, 1, 2, 2]] * 0.9 + 0.1 / 3
    m = classification_metrics([0, 1, 2, 1], proba, ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and "roc_curve" not in m and 0 < m["roc_auc"] <= 1
    assert classification_metrics([0, 0], proba[:2], ["a", "b", "c"])["roc_auc"] is None
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0], np.ones((1, 2)), ["a", "b", "c"])
