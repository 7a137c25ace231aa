"""Classification metrics, and the choice of a decision threshold on held-out data.

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


def dominating_threshold(
    y_true: np.ndarray,
    scores: np.ndarray,
    champion_pred: np.ndarray,
    samples: int = 200,
    max_candidates: int = 200,
    seed: int = 0,
) -> tuple[float, dict[str, float]] | None:
    """The score threshold at which these scores dominate the champion's decisions on these labels.

    Candidates are the thresholds whose precision and recall are both >= the champion's. Of those,
    the one that beats the champion on precision, recall and F1 together in the most paired bootstrap
    resamples (ties: the middle one, away from both edges) is returned with its figures; None when
    no threshold dominates, there are no positives, or the champion caught none of them (then every
    threshold "dominates" it, and the best-F1 threshold is the better choice).

    >>> y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    >>> s = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.1, 0.1, 0.1])
    >>> champ = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0])      # precision 0.5, recall 0.5
    >>> t, info = dominating_threshold(y, s, champ)
    >>> t, info["precision"], info["recall"]
    (0.3, 0.8, 1.0)
    """
    y = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=float)
    champ = np.asarray(champion_pred).astype(bool)
    if y.sum() == 0 or not (champ & y).any():  # no positive caught: no operating point to dominate
        return None
    p, r, t = precision_recall_curve(y, scores)
    p, r = p[:-1], r[:-1]  # aligned with t
    c_tp, c_fl = float((y & champ).sum()), float(champ.sum())
    c_p = c_tp / c_fl
    c_r = c_tp / y.sum()
    ok = np.flatnonzero((p >= c_p) & (r >= c_r))
    if not len(ok):
        return None
    if len(ok) > max_candidates:
        ok = ok[np.linspace(0, len(ok) - 1, max_candidates).round().astype(int)]
    t, p, r = t[ok], p[ok], r[ok]
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    n = len(y)
    w = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=samples).astype(float)
    preds = scores[:, None] >= t[None, :]  # n x k
    pos = w @ y  # B
    tp, fl = w @ (preds & y[:, None]), w @ preds.astype(float)  # B x k
    ctp, cfl = w @ (champ & y), w @ champ.astype(float)  # B
    with np.errstate(divide="ignore", invalid="ignore"):
        bp, br = tp / fl, tp / pos[:, None]
        cp, cr = (ctp / cfl)[:, None], (ctp / pos)[:, None]
        bf, cf = 2 * tp / (fl + pos[:, None]), (2 * ctp / (cfl + pos))[:, None]
        # NaN compares False: never a win; matching a perfect 1.0 is one
        wins = _beats(bp, cp) & _beats(br, cr) & _beats(bf, cf)
    prob = wins.mean(0)
    tied = np.flatnonzero(prob >= prob.max() - 1e-9)  # thresholds ascending: recall falls, precision rises
    best = int(tied[len(tied) // 2])  # the middle of the best run keeps a margin on both sides
    info = {"precision": float(p[best]), "recall": float(r[best]), "f1": float(f1[best])}
    info |= {"champion_precision": c_p, "champion_recall": c_r}
    info["p_dominates"] = float(prob[best])
    return float(t[best]), info


def _beats(challenger: np.ndarray, champion: np.ndarray) -> np.ndarray:
    return (challenger > champion) | ((challenger == 1.0) & (champion == 1.0))
