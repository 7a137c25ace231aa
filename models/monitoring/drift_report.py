"""Drift report: reference-vs-current distribution plots and the statistics, as one figure.

Stored by the drift flow as MLflow artifacts (``drift/report.png``, ``drift/report.json``) of a
``drift-check`` run, next to a Prefect markdown artifact with the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def figure(
    reference: dict[str, Any],
    scores: pd.DataFrame,
    stats: dict[str, Any],
    importance: dict[str, float] | None = None,
) -> Any:
    """One panel per checked feature (and the score): reference in grey, current window in colour;
    with ``importance``, a last panel with the version's global importance (mean |contribution|)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(stats)
    cols = 3
    rows = max(1, -(-(len(names) + bool(importance)) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        st = stats[name]
        ref = reference["score"] if name == "score" else reference.get("numeric", {}).get(name)
        if ref is not None and "sample" in ref:
            cur = pd.to_numeric(scores[name], errors="coerce").dropna().to_numpy()
            both = np.concatenate([np.asarray(ref["sample"]), cur])
            bins = np.histogram_bin_edges(both, bins=30)
            ax.hist(ref["sample"], bins=bins, density=True, alpha=0.5, color="grey", label="reference")
            ax.hist(cur, bins=bins, density=True, alpha=0.5, color="tab:red", label="current")
            title = f"{name}  PSI {st['psi']:.3f}  KS {st['ks']:.3f}"
        else:
            freq = reference["categorical"][name]
            cats = sorted(set(freq) | set(st.get("current", {})))
            x = np.arange(len(cats))
            ax.bar(x - 0.2, [freq.get(c, 0) for c in cats], 0.4, color="grey", label="reference")
            ax.bar(x + 0.2, [st["current"].get(c, 0) for c in cats], 0.4, color="tab:red", label="current")
            ax.set_xticks(x, cats, rotation=45, ha="right", fontsize=7)
            title = f"{name}  PSI {st['psi']:.3f}"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    rest = list(axes.flat)[len(names) :]
    if importance:
        ax, rest = rest[0], rest[1:]
        top = list(importance)[:10][::-1]
        ax.barh(top, [importance[n] for n in top], color="tab:blue")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title("model's global importance (mean |contribution|)", fontsize=9)
    for ax in rest:
        ax.axis("off")
    fig.tight_layout()
    return fig


def markdown(summary: dict[str, Any], importance: dict[str, float] | None = None) -> str:
    lines = [
        f"### Drift check of `{summary['model']}` v{summary['champion']} -- window {summary['window']}",
        f"{summary['events']} scored events, {summary['labelled']} labelled. "
        f"{len(summary['findings'])} finding(s), {len(summary['alerts_sent'])} alert(s) sent.",
        *(
            [
                "Global importance of the model (mean |contribution| on its holdout): "
                + ", ".join(f"{k} {v:.3g}" for k, v in list(importance.items())[:5])
                + ".",
            ]
            if importance
            else []
        ),
        "",
        "| kind | feature | statistic | value | threshold | severity | alert |",
        "|---|---|---|---|---|---|---|",
    ]
    sent = set(summary["alerts_sent"])
    for f in summary["findings"]:
        key = f"{f['kind']}.{f['feature']}"
        lines.append(
            f"| {f['kind']} | {f['feature']} | {f['statistic']} | {f['value']:.4g} | {f['threshold']:.4g} "
            f"| {f['severity']} | {f.get('alert') or ('sent' if key in sent else 'cooldown')} |"
        )
    route = summary.get("route") or {}
    if route and not route.get("ok"):
        lines += ["", f"**On-call route: not routed: {route.get('why')}**"]
    return "\n".join(lines)
