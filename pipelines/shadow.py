"""Shadow scores: the ``shadow`` Delta table and live shadow-vs-champion metrics.

The scoring job scores each micro-batch with ``@shadow`` too (:mod:`rtml.pipelines.scorer`, same
pass, nothing acted on) and commits those rows -- role ``shadow``, the shadow's version, score and
decision next to the champion's for the same event -- to the ``shadow`` table, exactly once per
batch like the scores. As labels mature in the ``labelled`` table, :func:`live_comparison` puts both
models' precision, recall and F1 side by side on the same labelled events.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec, parse_duration_seconds

ROLE = "shadow"


def shadow_rows(scored: Any, spec: StreamSpec) -> Any:
    """The ``shadow`` table's rows of a scored micro-batch (Arrow): only rows a shadow scored."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = scored.filter(pc.is_valid(scored.column("shadow_version")))
    return pa.table(
        {
            spec.event_id: rows.column(spec.event_id),
            EVENT_MS: rows.column(EVENT_MS),
            "role": pa.array([ROLE] * rows.num_rows, pa.string()),
            "model_version": rows.column("shadow_version"),
            "score": rows.column("shadow_score"),
            "decision": rows.column("shadow_decision"),
            "champion_version": rows.column("model_version"),
            "champion_score": rows.column("score"),
            "champion_decision": rows.column("decision"),
            "scored_at_ms": rows.column("scored_at_ms"),
        }
    )


def _metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from rtml.models.evaluation.metrics import classification_metrics

    m = classification_metrics(y, pred)
    return {k: (round(v, 4) if isinstance(v, float) and np.isfinite(v) else v) for k, v in m.items()}


def labelled_live_rows(
    settings: Settings,
    spec: StreamSpec,
    version: str,
    now_ms: int | None = None,
    champion_version: str | None = None,
) -> tuple[pd.DataFrame, int]:
    """(rows, shadowed): the events shadow ``version`` scored within ``drift.performance_window``
    (partition pruning: only those days are read) that have a label, each with both models' decision
    and score and the label; ``champion_version``: only events that champion served. ``shadowed``
    counts the scored rows before the join with labels."""
    import time

    from rtml.pipelines.labelled import read_labelled
    from rtml.pipelines.tables import open_table, query

    now_ms = now_ms or int(time.time() * 1000)
    since = now_ms - parse_duration_seconds(settings.drift.performance_window) * 1000
    dt = open_table(settings, "shadow")
    if dt is None or spec.label is None:
        return pd.DataFrame(), 0
    day = pd.to_datetime(since, unit="ms", utc=True).strftime("%Y-%m-%d")
    where = f"event_date >= '{day}' AND {EVENT_MS} > {since} AND model_version = '{int(version)}'"
    if champion_version is not None:
        where += f" AND champion_version = '{int(champion_version)}'"
    cols = [spec.event_id, "decision", "champion_decision", "champion_version", "score", "champion_score"]
    rows = query(dt, where, cols).to_pandas()
    labelled = read_labelled(settings, since) if len(rows) else pd.DataFrame()
    if not len(labelled):
        return pd.DataFrame(), len(rows)
    joined = rows.merge(labelled[[spec.event_id, spec.label.field]], on=spec.event_id, how="inner")
    return joined, len(rows)


def live_comparison(
    settings: Settings, spec: StreamSpec, version: str, now_ms: int | None = None
) -> dict[str, Any]:
    """Shadow ``version`` and the champion(s) it ran beside, on the same events that have a label,
    within ``drift.performance_window``."""
    from rtml.models.evaluation.tasks import targets

    out: dict[str, Any] = {"version": str(version), "window": settings.drift.performance_window}
    joined, out["shadowed"] = labelled_live_rows(settings, spec, version, now_ms)
    out["labelled"] = len(joined)
    if not len(joined) or spec.task == "regression":
        return out
    y = targets(joined, spec)
    out["champion_versions"] = sorted(joined["champion_version"].astype(str).unique().tolist())
    out["shadow"] = _metrics(y, joined["decision"].to_numpy())
    out["champion"] = _metrics(y, joined["champion_decision"].to_numpy())
    out["deltas"] = {
        m: round(out["shadow"][m] - out["champion"][m], 4)
        for m in ("precision", "recall", "f1")
        if np.isfinite(out["shadow"][m]) and np.isfinite(out["champion"][m])
    }
    return out
