"""`rtml explain EVENT_ID`: one scored event from the score sink, with why it got its score.

A plain function; :mod:`rtml.infra.app.cli` registers it on the app.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from rtml.infra.app.cli_support import CommandError, JsonOpt, console, emit, settings_of, table

#: What the contributions of each family add up to, as printed.
_UNITS = {
    "log_odds": "log-odds",
    "probability": "probability",
    "prediction": "prediction",
    "distance": "distance",
}


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def scored_event(settings: Any, spec: Any, event_id: str) -> dict[str, Any]:
    """The event's score row from the sink as one object: event, features as scored, score, version,
    explanation (None if it was scored without one). CommandError if the sink does not hold it."""
    from rtml.pipelines.explanations import explanation_of
    from rtml.pipelines.sinks import read_scored_event
    from rtml.pipelines.tables import table_uri

    row = read_scored_event(settings, spec.event_id, event_id)
    if row is None:
        raise CommandError(
            f"event '{event_id}' is not in the score sink ({table_uri(settings, 'scores')}): "
            "not scored yet, quarantined, or another table_root"
        )
    return {
        "ok": True,
        "event": {
            "event_id": row[spec.event_id],
            "event_time": row[spec.event_time],
            "entity": row[spec.entity_key],
        },
        "features": {n: _clean(row.get(n)) for n in spec.model_inputs},
        "score": _clean(row["score"]),
        "decision": row.get("decision"),
        "model_version": row["model_version"],
        "scored_at_ms": row.get("scored_at_ms"),
        "latency_ms": row.get("latency_ms"),
        "batch": row["batch"],
        "explanation": explanation_of(row),
    }


def _show(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def _render(r: dict[str, Any]) -> None:
    ev = r["event"]
    table(
        f"event {ev['event_id']}",
        ["", "value"],
        [
            ["event time", ev["event_time"]],
            ["entity", ev["entity"]],
            ["score", f"{r['score']:.6g}" if r["score"] is not None else None],
            ["decision", r["decision"]],
            ["model version", f"v{r['model_version']}"],
            ["scored in", f"{r['batch']}, {r['latency_ms']} ms after it reached Kafka"],
        ],
    )
    ex = r["explanation"]
    top = {t["feature"]: t["contribution"] for t in ex["top"]} if ex else {}
    table(
        "features as scored",
        ["feature", "value", "contribution"],
        [[n, _show(v), f"{top[n]:+.4g}" if n in top else ""] for n, v in r["features"].items()],
    )
    if ex is None:
        console.print(
            "no explanation: scored with scoring.explain_top_k = 0 or by a family that does not explain"
        )
        return
    unit = _UNITS.get(ex["output"], ex["output"])
    rows = [
        [i, t["feature"], _show(r["features"].get(t["feature"])), f"{t['contribution']:+.4g}"]
        for i, t in enumerate(ex["top"], 1)
    ]
    rows += [["", "other features", "", f"{ex['rest']:+.4g}"], ["", "base value", "", f"{ex['base']:.4g}"]]
    rows += [["", f"= {unit}", "", f"{ex['raw']:.4g}"]]
    table(
        f"why: top {len(ex['top'])} contributions to the {unit}",
        ["rank", "feature", "value", "contribution"],
        rows,
    )


def explain(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="The event's id (the spec's event_id field).")],
    as_json: JsonOpt = False,
) -> None:
    """Show a scored event: its features as scored, score, model version and top contributing features."""
    from rtml.infra.config.spec import load_spec

    settings = settings_of(ctx)
    emit(scored_event(settings, load_spec(settings.spec), event_id), as_json, _render)
