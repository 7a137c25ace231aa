"""One picture per champion/challenger decision: both models on the same holdout.

Left, both precision-recall curves with each model's operating point (its decision threshold)
marked; right, both confusion matrices side by side on one colour scale. Logged by the retrain as
``evaluation/decision.png`` of the challenger's run, next to the decision table (its description).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = (rng.random(400) < 0.2).astype(int)
>>> a, b = y * 0.5 + rng.random(400) * 0.6, y * 0.7 + rng.random(400) * 0.5
>>> fig = decision_figure(y, Scored("champion v1", a, 0.5), Scored("challenger v2", b, 0.6))
>>> [ax.get_title().split(":")[0] for ax in fig.axes[:3]]
['Precision-recall on the same holdout (n=400, 81 positive)', 'champion v1', 'challenger v2']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scored:
    """One model's scores on the holdout and its decision threshold."""

    name: str
    scores: np.ndarray
    threshold: float


def _counts(y: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """[[TN, FP], [FN, TP]]."""
    y, f = y.astype(bool), flagged.astype(bool)
    return np.array([[np.sum(~y & ~f), np.sum(~y & f)], [np.sum(y & ~f), np.sum(y & f)]])


def _prf(cm: np.ndarray) -> tuple[float, float, float]:
    tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * p * r / (p + r) if p + r and np.isfinite(p) and np.isfinite(r) else float("nan")
    return float(p), float(r), float(f1)


def decision_figure(y: np.ndarray, champion: Scored, challenger: Scored) -> Any:
    """The figure (matplotlib, Agg) for two models scored on the same labelled holdout ``y``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y).astype(int)
    fig = plt.figure(figsize=(13, 4.6))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.5, 1, 1], wspace=0.35)
    ax = fig.add_subplot(grid[0])
    cms = [_counts(y, m.scores >= m.threshold) for m in (champion, challenger)]
    for model, cm, colour in zip((champion, challenger), cms, ("tab:grey", "tab:blue"), strict=True):
        if y.sum():
            prec, rec, _ = precision_recall_curve(y, model.scores)
            ax.plot(rec, prec, color=colour, lw=1.8, label=model.name)
        p, r, f1 = _prf(cm)
        ax.plot(
            [r],
            [p],
            "o",
            ms=9,
            color=colour,
            markeredgecolor="black",
            zorder=3,
            label=f"operating point: threshold {model.threshold:.3g}, F1 {f1:.3f}",
        )
    ax.axhline(y.mean() if len(y) else 0, color="lightgrey", ls=":", lw=1, label="random (positive rate)")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
    ax.set_title(f"Precision-recall on the same holdout (n={len(y)}, {int(y.sum())} positive)", fontsize=10)
    ax.legend(loc="lower left", fontsize=8, frameon=True, framealpha=0.9)
    top = max(1, int(max(cm.max() for cm in cms)))
    for i, (model, cm) in enumerate(zip((champion, challenger), cms, strict=True)):
        cax = fig.add_subplot(grid[i + 1])
        cax.imshow(np.log1p(cm), cmap="Blues", vmin=0, vmax=np.log1p(top))
        for (r, c), v in np.ndenumerate(cm):
            cax.text(
                c,
                r,
                f"{v:,}",
                ha="center",
                va="center",
                fontsize=11,
                color="white" if v > top / 3 else "black",
            )
        cax.set_xticks([0, 1], ["not flagged", "flagged"], fontsize=8)
        cax.set_yticks([0, 1], ["negative", "positive"], fontsize=8)
        p, r, f1 = _prf(cm)
        cax.set_title(f"{model.name}: P {p:.3f} R {r:.3f} F1 {f1:.3f}", fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.9, bottom=0.13)
    return fig
