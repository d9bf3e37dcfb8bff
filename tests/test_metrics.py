import numpy as np
import pytest

from featpipe.metrics import calibration, classification_metrics


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


def test_ece_by_hand():
    # Confidences 0.9, 0.9 (bin 14: one right, one wrong) and 0.6 (bin 9: right).
    proba = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    c = calibration([0, 0, 0], proba)
    assert c["ece_bins"] == 15
    expected = 2 / 3 * abs(0.5 - 0.9) + 1 / 3 * abs(1.0 - 0.6)
    assert c["ece"] == pytest.approx(expected)
    assert [(b["count"], b["accuracy"]) for b in c["reliability"]] == [(1, 1.0), (2, 0.5)]
    assert c["reliability"][1]["confidence"] == pytest.approx(0.9)


def test_ece_zero_when_confidence_matches_accuracy_and_in_metrics():
    # 4 rows at confidence 0.75, 3 right: perfectly calibrated.
    proba = np.array([[0.75, 0.25]] * 4)
    m = classification_metrics([0, 0, 0, 1], proba, ["a", "b"])
    assert m["ece"] == pytest.approx(0.0) and m["ece_bins"] == 15
    # A bin edge belongs to the bin below: confidence exactly 1/15 * 8 lands in bin 7.
    edge = calibration([0], np.array([[8 / 15, 7 / 15]]))
    assert edge["reliability"][0]["low"] == pytest.approx(7 / 15)
