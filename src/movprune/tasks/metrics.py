"""Classification and regression metrics, in % (names as Hugging Face ``evaluate`` reports them)."""

from __future__ import annotations

import math

import numpy as np


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """% of predictions equal to the label."""
    return 100.0 * float(np.mean(preds == labels))


def f1_binary(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1), in %."""
    tp = float(np.sum((preds == 1) & (labels == 1)))
    fp = float(np.sum((preds == 1) & (labels == 0)))
    fn = float(np.sum((preds == 0) & (labels == 1)))
    return 0.0 if tp == 0 else 100.0 * 2 * tp / (2 * tp + fp + fn)


def matthews_correlation(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient of binary predictions, x100 (0 when undefined)."""
    tp = float(np.sum((preds == 1) & (labels == 1)))
    tn = float(np.sum((preds == 0) & (labels == 0)))
    fp = float(np.sum((preds == 1) & (labels == 0)))
    fn = float(np.sum((preds == 0) & (labels == 1)))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else 100.0 * (tp * tn - fp * fn) / denom


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, x100."""
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return 0.0 if denom == 0 else 100.0 * float(np.sum(x * y)) / denom


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (as scipy's rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def spearmanr(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation, x100."""
    return pearson(_ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64)))


def f1_macro(preds: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean over the classes present in labels or predictions of each class's F1, in %."""
    scores = []
    for c in np.union1d(np.unique(labels), np.unique(preds)):
        tp = float(np.sum((preds == c) & (labels == c)))
        fp = float(np.sum((preds == c) & (labels != c)))
        fn = float(np.sum((preds != c) & (labels == c)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return 100.0 * float(np.mean(scores)) if scores else 0.0


#: Metrics of the classification family (predicted class ids vs gold ids), by name.
CLASSIFICATION_METRICS = {"accuracy": accuracy, "f1": f1_binary, "f1_macro": f1_macro,
                          "matthews_correlation": matthews_correlation}
#: Metrics of the regression family (predicted vs gold scores), by name.
REGRESSION_METRICS = {"pearson": pearson, "spearmanr": spearmanr}
