"""The metrics every run reports, from true labels and predicted class probabilities."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

# ROC curves are stored for plotting; a few hundred points draw the same curve as thousands.
MAX_ROC_POINTS = 200
# Expected calibration error: equal-width bins over the top-class confidence (Guo et al. 2017 use 15).
ECE_BINS = 15


def classification_metrics(y_true, proba, class_names: list[str]) -> dict:
    """Accuracy, balanced accuracy, per-class P/R/F1, confusion matrix, log loss, ROC AUC (+ curve if binary),
    expected calibration error and its reliability bins."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = len(class_names)
    if proba.ndim != 2 or proba.shape[1] != n_classes:
        raise ValueError(f"proba must have shape (n, {n_classes}), got {proba.shape}")
    labels = np.arange(n_classes)
    y_pred = proba.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    result = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "log_loss": float(skm.log_loss(y_true, np.clip(proba, 1e-15, 1), labels=labels)),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "roc_auc": _roc_auc(y_true, proba, n_classes),
        **calibration(y_true, proba),
    }
    if n_classes == 2 and len(np.unique(y_true)) == 2:
        fpr, tpr, _ = skm.roc_curve(y_true, proba[:, 1])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), MAX_ROC_POINTS)).astype(int))
        result["roc_curve"] = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
    return result


def _roc_auc(y_true, proba, n_classes: int) -> float | None:
    """Binary AUC, or macro one-vs-rest AUC for multiclass; None when a class is absent."""
    if len(np.unique(y_true)) < n_classes:
        return None
    if n_classes == 2:
        return float(skm.roc_auc_score(y_true, proba[:, 1]))
    # Rows must sum to 1 for sklearn's multiclass AUC; renormalise float noise away.
    return float(skm.roc_auc_score(y_true, proba / proba.sum(axis=1, keepdims=True), multi_class="ovr"))


def calibration(y_true, proba, n_bins: int = ECE_BINS) -> dict:
    """{"ece", "ece_bins", "reliability"}: the expected calibration error of the top-class confidence over
    `n_bins` equal-width bins of [0, 1] (sum over bins of |accuracy - mean confidence| weighted by the bin's share
    of rows), and per non-empty bin its range, count, accuracy and mean confidence (the reliability diagram)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    # Bin i holds confidences in (i/n, (i+1)/n]; confidence 0 (impossible for a distribution) joins the first bin.
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    hits = np.bincount(index, weights=correct, minlength=n_bins)
    conf_sums = np.bincount(index, weights=confidence, minlength=n_bins)
    filled = counts > 0
    accuracy = np.divide(hits, counts, out=np.zeros(n_bins), where=filled)
    mean_conf = np.divide(conf_sums, counts, out=np.zeros(n_bins), where=filled)
    ece = float(np.sum(counts / max(len(y_true), 1) * np.abs(accuracy - mean_conf)))
    reliability = [
        {"low": i / n_bins, "high": (i + 1) / n_bins, "count": int(counts[i]),
         "accuracy": float(accuracy[i]), "confidence": float(mean_conf[i])}
        for i in np.flatnonzero(filled)
    ]
    return {"ece": ece, "ece_bins": n_bins, "reliability": reliability}
