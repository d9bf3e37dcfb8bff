"""The metrics every run reports, from true labels and predicted class probabilities."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

# ROC curves are stored for plotting; a few hundred points draw the same curve as thousands.
MAX_ROC_POINTS = 200


def classification_metrics(y_true, proba, class_names: list[str]) -> dict:
    """Accuracy, balanced accuracy, per-class P/R/F1, confusion matrix, log loss, ROC AUC (+ curve if binary)."""
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
