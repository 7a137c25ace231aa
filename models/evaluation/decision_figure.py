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


def decision_figure(y: np.ndarray, champion: Scored, challenger: Scored) -> Any:
    """The figure (matplotlib, Agg) for two models scored on the same labelled holdout ``y``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, precision_recall_curve

    from rtml.models.evaluation.metrics import classification_metrics

    y = np.asarray(y).astype(int)
    fig = plt.figure(figsize=(13, 5.6))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.5, 1, 1], wspace=0.35)
    ax = fig.add_subplot(grid[0])
    flagged = [(m.scores >= m.threshold).astype(int) for m in (champion, challenger)]
    cms = [confusion_matrix(y, f, labels=[0, 1]) for f in flagged]  # [[TN, FP], [FN, TP]]
    prf = [classification_metrics(y, f) for f in flagged]
    for model, m, colour in zip((champion, challenger), prf, ("tab:grey", "tab:blue"), strict=True):
        if y.sum():
            prec, rec, _ = precision_recall_curve(y, model.scores)
            ax.plot(rec, prec, color=colour, lw=1.8, label=model.name)
        ax.plot(
            [m["recall"]],
            [m["precision"]],
            "o",
            ms=9,
            color=colour,
            markeredgecolor="black",
            zorder=3,
            label=f"operating point: threshold {model.threshold:.3g}, F1 {m['f1']:.3f}",
        )
    ax.axhline(y.mean() if len(y) else 0, color="lightgrey", ls=":", lw=1, label="random (positive rate)")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
    ax.set_title(f"Precision-recall on the same holdout (n={len(y)}, {int(y.sum())} positive)", fontsize=10)
    # below the axes: inside, it covers the curves and operating points it explains
    handles, labels = ax.get_legend_handles_labels()
    order = [0, 1, len(labels) - 1, *range(2, len(labels) - 1)]  # champion + random | challenger
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="upper left",
        bbox_to_anchor=(0.0, -0.13),  # from the axes' left edge into the free space under the matrices
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    top = max(1, int(max(cm.max() for cm in cms)))
    for i, (model, cm, m) in enumerate(zip((champion, challenger), cms, prf, strict=True)):
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
        cax.set_title(
            f"{model.name}: P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f}", fontsize=10
        )
    fig.subplots_adjust(left=0.05, right=0.98, top=0.92, bottom=0.27)
    return fig
