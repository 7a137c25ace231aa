"""Classification metrics and threshold calibration on held-out data.

>>> m = classification_metrics(np.array([1, 0, 1, 0]), np.array([1, 0, 0, 0]))
>>> m["precision"], m["recall"], round(m["f1"], 3)
(1.0, 0.5, 0.667)
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """precision, recall, F1 of the positive class (NaN where undefined)."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=np.nan)
    return {
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "n": int(len(y_true)),
        "positives": int(y_true.sum()),
    }


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray, default: float = 0.5) -> float:
    """Score threshold maximising F1; default when there are no positives."""
    if np.asarray(y_true).sum() == 0:
        return default
    p, r, t = precision_recall_curve(y_true, scores)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)[:-1]
    return float(t[int(np.argmax(f1))]) if len(t) else default
