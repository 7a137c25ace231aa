"""Drift report: reference-vs-current distribution plots and the statistics, as one figure.

Stored by the drift flow as MLflow artifacts (``drift/report.png``, ``drift/report.json``) of a
``drift-check`` run, next to a Prefect markdown artifact with the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SCORE_BANDS = (0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def axis_kind(name: str, reference: np.ndarray, current: np.ndarray) -> str:
    """How a numeric panel is drawn: ``bands`` (the score), ``boolean`` (only 0/1: two bars),
    ``discrete`` (at most 30 whole values, e.g. counts: a bar per value), ``log`` (non-negative with
    a heavy right tail: log-spaced bins on a log axis) or ``linear``.

    >>> rng = np.random.default_rng(0)
    >>> axis_kind("amount", rng.lognormal(3, 1.5, 500), rng.lognormal(3, 1.5, 500))
    'log'
    >>> axis_kind("is_foreign", np.array([0.0, 1.0, 0.0]), np.array([1.0, 1.0]))
    'boolean'
    >>> axis_kind("count_24h", np.array([1.0, 2, 2, 7]), np.array([1.0, 3]))
    'discrete'
    >>> axis_kind("hour", rng.uniform(0, 23, 500), rng.uniform(0, 23, 500))
    'linear'
    """
    if name == "score":
        return "bands"
    both = np.concatenate([reference, current])
    if not len(both):
        return "linear"
    if np.isin(both, (0.0, 1.0)).all():
        return "boolean"
    if (both == np.round(both)).all() and len(np.unique(both)) <= 30:
        return "discrete"
    positive = both[both > 0]
    if both.min() >= 0 and len(positive) > 1:
        q50, q95, q99 = np.quantile(positive, [0.5, 0.95, 0.99])
        if q99 > 5 * q50 or positive.max() > 20 * q95:
            return "log"
    return "linear"


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]
    return counts / max(1, len(values))


def _numeric_panel(ax: Any, name: str, ref: np.ndarray, cur: np.ndarray) -> str:
    """Draw one numeric panel; returns what the title should add about the axis."""
    kind = axis_kind(name, ref, cur)
    grey, red = {"color": "grey", "label": "reference"}, {"color": "tab:red", "label": "current"}
    if kind in ("bands", "boolean"):
        edges = np.asarray(SCORE_BANDS) if kind == "bands" else np.array([-0.5, 0.5, 1.5])
        labels = (
            [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
            if kind == "bands"
            else ["0 / false", "1 / true"]
        )
        x = np.arange(len(labels))
        ax.bar(x - 0.2, _shares(ref, edges), 0.4, **grey)
        ax.bar(x + 0.2, _shares(cur, edges), 0.4, **red)
        ax.set_xticks(
            x,
            labels,
            rotation=45 if kind == "bands" else 0,
            ha="right" if kind == "bands" else "center",
            fontsize=7,
        )
        ax.set_ylabel("share of events", fontsize=7)
        return "score bands" if kind == "bands" else ""
    both = np.concatenate([ref, cur])
    if kind == "discrete":
        values = np.unique(both)
        x = np.arange(len(values))
        share = lambda v: np.array([(v == u).mean() if len(v) else 0.0 for u in values])  # noqa: E731
        ax.bar(x - 0.2, share(ref), 0.4, **grey)
        ax.bar(x + 0.2, share(cur), 0.4, **red)
        ax.set_xticks(x, [f"{u:g}" for u in values], fontsize=7)
        ax.set_ylabel("share of events", fontsize=7)
        return ""
    if kind == "log":
        positive = both[both > 0]
        edges = np.geomspace(positive.min(), positive.max(), 31)
        ref, cur = np.clip(ref, edges[0], None), np.clip(cur, edges[0], None)
        ax.set_xscale("log")
    else:
        edges = np.histogram_bin_edges(both, bins=30)
    for values, style in ((ref, grey), (cur, red)):  # shares per bin: comparable on any axis
        weights = np.full(len(values), 1 / max(1, len(values)))
        ax.hist(values, bins=edges, weights=weights, alpha=0.5, **style)
    ax.set_ylabel("share of events", fontsize=7)
    return "log x" if kind == "log" else ""


def figure(
    reference: dict[str, Any],
    scores: pd.DataFrame,
    stats: dict[str, Any],
    importance: dict[str, float] | None = None,
) -> Any:
    """One panel per checked feature (and the score): reference in grey, current window in colour;
    heavy-tailed features on a log axis, 0/1 features and the score as bars of shares (the score over
    :data:`SCORE_BANDS`, where a spike at 0 would hide everything); with ``importance``, a last panel
    with the version's global importance (mean |contribution|)."""
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
            cur = pd.to_numeric(scores[name], errors="coerce").dropna().to_numpy(dtype=float)
            note = _numeric_panel(ax, name, np.asarray(ref["sample"], dtype=float), cur)
            title = f"{name}  PSI {st['psi']:.3f}  KS {st['ks']:.3f}" + (f"  ({note})" if note else "")
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
