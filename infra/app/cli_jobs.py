"""Job commands of the `rtml` CLI (produce, replay, bootstrap, score, models, retrain, deploy, serve).

Plain functions; :mod:`rtml.infra.app.cli` registers each one on the app.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rtml.infra.app.cli_support import (
    CommandError,
    JsonLinesOpt,
    JsonOpt,
    console,
    emit,
    failure_reason,
    settings_of,
    table,
)
from rtml.infra.app.progress import Display

LabelDelayEventsOpt = Annotated[
    int,
    typer.Option(
        min=0, help="Events that must follow an event before its label is sent (as with late chargebacks)."
    ),
]


def _spec(ctx: typer.Context):  # noqa: ANN202
    from rtml.infra.config.spec import load_spec

    return load_spec(settings_of(ctx).spec)


def _render_produce(r: dict) -> None:
    table(
        "produced",
        ["", "count"],
        [
            ["events", r["events"]],
            ["valid", r["valid"]],
            ["malformed", r["malformed_total"]],
            ["labels", r["labels"]],
            ["events/s", r["events_per_s"]],
        ],
    )


def _progress_stream(total: int | None, quiet: bool, run):  # noqa: ANN001, ANN202
    with Display(quiet).bar("producing events", total) as bar:
        return run(bar.advance)


def produce(
    ctx: typer.Context,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of events.")] = 10_000,
    rate: Annotated[
        float | None, typer.Option(min=1, help="Events per second (default: as fast as possible).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same stream).")] = 1,
    drift_at: Annotated[
        int | None, typer.Option(min=0, help="Switch distribution and concept at event N.")
    ] = None,
    malformed_rate: Annotated[float, typer.Option(min=0, max=0.99, help="Fraction of invalid events.")] = 0.0,
    label_delay: Annotated[
        float, typer.Option(min=0, help="Seconds before labels (chargebacks) follow.")
    ] = 0.0,
    label_delay_events: LabelDelayEventsOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Generate synthetic card transactions onto the events topic; labels follow on the labels topic."""
    from rtml.pipelines.producer import generated_frames

    chunk = max(100, min(5000, int(rate / 10) if rate else 5000))
    _send_frames(
        ctx,
        lambda spec: generated_frames(spec, n, seed, drift_at, chunk),
        n,
        as_json,
        rate=rate,
        malformed_rate=malformed_rate,
        label_delay_s=label_delay,
        label_delay_events=label_delay_events,
        seed=seed,
    )


def _send_frames(ctx: typer.Context, make_frames, total: int | None, as_json: bool, **kwargs) -> None:  # noqa: ANN001, ANN003
    """Stream frames onto Kafka with a progress bar; bad input becomes a one-line error."""
    from rtml.pipelines.producer import ProduceError, stream_frames

    s, spec = settings_of(ctx), _spec(ctx)
    try:
        frames = make_frames(spec)
        result = _progress_stream(
            total, as_json, lambda cb: stream_frames(s, spec, frames, on_progress=cb, **kwargs)
        )
    except ProduceError as exc:
        raise CommandError(str(exc)) from None
    emit({"ok": True, **result}, as_json, _render_produce)


def replay(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file whose columns match the stream spec.")],
    rate: Annotated[float | None, typer.Option(min=1, help="Events per second.")] = None,
    label_delay: Annotated[
        float, typer.Option(min=0, help="Seconds before labels follow (if a label column).")
    ] = 0.0,
    label_delay_events: LabelDelayEventsOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Stream a CSV/Parquet file of events (and labels, when it has the label column) onto Kafka."""
    from rtml.pipelines.producer import file_frames

    _send_frames(
        ctx,
        lambda spec: file_frames(file, spec, 5000),
        None,
        as_json,
        rate=rate,
        label_delay_s=label_delay,
        label_delay_events=label_delay_events,
    )


def bootstrap(
    ctx: typer.Context,
    n: Annotated[int, typer.Option("--n", "-n", min=1000, help="Generated history size.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Seed of the generated history.")] = 7,
    from_file: Annotated[Path | None, typer.Option("--from", help="Labelled history (CSV/Parquet).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing champion.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train an initial model, register it in MLflow and point alias `champion` at it."""
    from rtml.flows.bootstrap import bootstrap as run
    from rtml.models.training.bootstrap import BootstrapError

    try:
        result = run(settings_of(ctx), _spec(ctx), n=n, seed=seed, from_file=from_file, force=force)
    except BootstrapError as exc:
        raise CommandError(str(exc)) from None
    emit(
        result,
        as_json,
        lambda r: console.print(
            r["reason"]
            if r["skipped"]
            else f"registered version {r['champion']} as @champion; {holdout_line(r['metrics'])}"
        ),
    )


# holdout metrics a task reports, in display order: classification / anomaly, then regression
_HOLDOUT = (("f1", "F1"), ("precision", "precision"), ("recall", "recall"), ("rmse", "RMSE"), ("mae", "MAE"))


def holdout_line(metrics: dict) -> str:
    """The holdout figures the model's task has: F1 / precision / recall, or RMSE / MAE / R².

    >>> holdout_line({"holdout_rmse": 2.5, "holdout_mae": 1.25, "holdout_r2": 0.9, "holdout_n": 300})
    'holdout RMSE 2.5, MAE 1.25, R² 0.9'
    >>> holdout_line({"holdout_f1": 0.8125, "holdout_precision": 0.9, "holdout_recall": 0.75})
    'holdout F1 0.812, precision 0.900, recall 0.750'
    >>> holdout_line({})
    'no holdout metrics'
    """
    regression = "holdout_rmse" in metrics
    names = (*_HOLDOUT, ("r2", "R²"))
    parts = [
        f"{label} {metrics[f'holdout_{key}']:{'.4g' if regression else '.3f'}}"
        for key, label in names
        if metrics.get(f"holdout_{key}") is not None
    ]
    return "holdout " + ", ".join(parts) if parts else "no holdout metrics"


def score(
    ctx: typer.Context,
    available_now: Annotated[bool, typer.Option(help="Process what is in the topic, then exit.")] = False,
    max_seconds: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the streaming scoring job (until SIGTERM/Ctrl-C, or once with --available-now)."""
    from rtml.pipelines.score_job import run_scoring

    what = "scoring what is in the topic" if available_now else "scoring (Ctrl-C stops)"
    try:
        with Display(as_json).bar(what, None) as bar:
            result = run_scoring(
                settings_of(ctx),
                _spec(ctx),
                available_now=available_now,
                max_seconds=max_seconds,
                on_batch=lambda progress: bar.advance(progress.get("numInputRows") or 0),
            )
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None

    def render(r: dict) -> None:
        table(
            "scoring",
            ["", "value"],
            [
                [k, r[k]]
                for k in (
                    "read",
                    "scored",
                    "quarantined",
                    "duplicates",
                    "batches",
                    "model_versions",
                    "events_per_s",
                )
            ],
        )
        if r["quarantined_by_reason"]:
            table(
                "quarantined by reason",
                ["reason", "events"],
                list(map(list, r["quarantined_by_reason"].items())),
            )

    emit(result, as_json, render)


def _lifecycle_error():  # noqa: ANN202
    from rtml.models.lifecycle.aliases import LifecycleError

    return LifecycleError


def models(
    ctx: typer.Context,
    moves: Annotated[int, typer.Option(min=0, help="How many of the last champion moves to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Registered versions (aliases, holdout P/R/F1, decisions, importance) and the champion's audit trail.

    The audit trail: where @champion points, whether that move is audited, the rollback path and the
    last moves. Global importance: each version's top 3 inputs by mean |contribution| on its holdout.
    Lineage (``labelled@``): the labelled table version a retrained version was trained and judged on.
    """
    from rtml.models.lifecycle.aliases import champion_audit, list_versions

    s = settings_of(ctx)
    rows = list_versions(s)
    audit = champion_audit(s, moves) if rows else None

    def render(r: dict) -> None:
        def f(x: float | None) -> str:
            return "" if x is None else f"{x:.3f}"

        table(
            f"model {s.mlflow.model_name}",
            [
                "version",
                "aliases",
                "trigger",
                "parent",
                "precision",
                "recall",
                "F1",
                "decision",
                "audit",
                "labelled@",
                "importance",
            ],
            [
                [
                    v["version"],
                    ",".join(v["aliases"]),
                    v["trigger"],
                    v["parent"],
                    f(v["precision"]),
                    f(v["recall"]),
                    f(v["f1"]),
                    v["decision"],
                    v["audit_records"],
                    (v.get("lineage") or {}).get("labelled_table_version", ""),
                    ", ".join(f"{k} {x:.3g}" for k, x in list(v.get("importance", {}).items())[:3]),
                ]
                for v in r["versions"]
            ],
        )
        _render_comparisons(r["versions"])
        a = r.get("champion")
        if not a:
            return
        path = " -> ".join(f"v{v}" for v in a["rollback_path"]) or "none"
        console.print(
            f"@champion v{a['alias']}: {a['status']}"
            + (f" (last audited: v{a['audited_version']})" if a["audited_version"] != a["alias"] else "")
            + f"; rollback path: {path}"
        )
        table(
            "champion moves (newest first)",
            ["seq", "when (UTC)", "kind", "from", "to", "user", "reason", "move id"],
            [
                [
                    m.get("seq"),
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.get("at_ms", 0) / 1000)),
                    m.get("kind"),
                    m.get("from") or "",
                    m.get("to"),
                    m.get("user"),
                    m.get("reason"),
                    str(m.get("move_id") or "")[:12],
                ]
                for m in a["moves"]
            ],
        )

    from rtml.infra.app.cli_shadow import live_rows, render_live

    live = live_rows(s, rows) if rows else None

    def render_all(r: dict) -> None:
        render(r)
        render_live(r.get("shadow"))

    emit({"ok": True, "versions": rows, "champion": audit, "shadow": live}, as_json, render_all)


def _render_comparisons(versions: list[dict]) -> None:
    """Each challenger against the champion it was judged with, on the same holdout."""
    compared = [v for v in versions if v.get("comparison")]
    if not compared:
        return

    def cell(m: dict) -> str:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        delta = "" if m.get("delta") is None else f" ({m['delta']:+.3f}"
        p = "" if m.get("p_better") is None else f", p={m['p_better']:.2f}"
        return f"{f(m.get('champion'))} -> {f(m.get('challenger'))}" + (delta + p + ")" if delta else "")

    names = list(compared[0]["comparison"]["metrics"])
    table(
        "decisions: champion -> challenger on the same holdout (delta, P(challenger better))",
        ["version", "vs", "holdout", *names, "decision", "reason"],
        [
            [
                v["version"],
                v["comparison"]["champion_version"] or "",
                v["comparison"]["holdout"] or "",
                *[cell(v["comparison"]["metrics"].get(n, {})) for n in names],
                v["decision"],
                (v["decision_reason"] or "")[:120],
            ]
            for v in compared
        ],
    )


def promote(
    ctx: typer.Context,
    version: Annotated[
        str, typer.Argument(help="Registered model version to make champion (3; 03 and v3 mean 3).")
    ],
    reason: Annotated[str, typer.Option(help="Why (recorded on the versions).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Manually move @champion to VERSION (bypasses the metric gate; recorded with reason and user)."""
    from rtml.models.lifecycle.aliases import promote_manual

    s = settings_of(ctx)
    try:
        result = promote_manual(s, _spec(ctx), version, reason)
    except _lifecycle_error() as exc:
        raise CommandError(str(exc)) from None
    emit(
        result,
        as_json,
        lambda r: console.print(
            f"@champion -> v{r['champion']} (was {'v' + r['from'] if r['from'] else 'unset'}); "
            f"audit record {r['move_id'][:12]}"
        ),
    )


def rollback(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why.")] = "rollback",
    as_json: JsonOpt = False,
) -> None:
    """Move @champion back one step in the audited champion history (v3 -> v2 -> v1; recorded)."""
    from rtml.models.lifecycle.aliases import rollback as run

    try:
        result = run(settings_of(ctx), reason)
    except _lifecycle_error() as exc:
        raise CommandError(str(exc)) from None
    emit(
        result,
        as_json,
        lambda r: console.print(
            f"@champion -> v{r['champion']} (rolled back from {'v' + r['from'] if r['from'] else 'unset'}); "
            f"next rollback: {'v' + r['previous_champion'] if r['previous_champion'] else 'none'}"
        ),
    )


def retrain(
    ctx: typer.Context,
    trigger: Annotated[str, typer.Option(help="schedule | drift | manual")] = "manual",
    batch: Annotated[
        Path | None, typer.Option(help="Train on this labelled Parquet/CSV batch instead of the store.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the retrain flow now (Prefect) and print its decision."""
    from rtml.flows.retrain import retrain_flow
    from rtml.infra.config.clients import configure_mlflow, prefect_api
    from rtml.models.training.retrain import check_trigger

    try:
        check_trigger(trigger)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--trigger") from None
    s = settings_of(ctx)
    if batch is not None and not batch.exists():
        raise typer.BadParameter(f"{batch}: no such file")
    configure_mlflow(s)
    overrides = getattr(ctx.obj, "overrides", None)  # global flags travel to the flow as parameters
    config = getattr(ctx.obj, "config", None)
    with prefect_api(s), Display(as_json).busy(f"retraining ({trigger}): Prefect flow rtml-retrain"):
        state = retrain_flow(
            config_file=str(config) if config else None,
            overrides=overrides,
            trigger=trigger,
            batch_file=str(batch.resolve()) if batch else None,
            return_state=True,
        )
    if state.is_failed():
        raise CommandError(f"retrain flow failed: {failure_reason(state)}")
    result = {"ok": True, **state.result()}

    def render(r: dict) -> None:
        console.print(f"[bold]{r['outcome']}[/]: {r['reason']}")
        if r.get("decision"):
            table(
                "champion vs challenger (same holdout)",
                ["metric", "champion", "challenger", "delta", "95% CI"],
                [
                    [
                        d["metric"],
                        d["champion"],
                        d["challenger"],
                        d["delta"],
                        f"[{d['ci_low']}, {d['ci_high']}]",
                    ]
                    for d in r["decision"]
                ],
            )
        ev, sh = r.get("evidence") or {}, r.get("shadow") or {}
        if ev.get("mode", "holdout") != "holdout":
            console.print(f"live evidence ({ev['mode']}): [bold]{ev['outcome']}[/]: {ev['reason']}")
        if sh.get("set") or sh.get("cleared"):
            was, now = (f"v{sh[k]}" if sh.get(k) else "none" for k in ("before", "after"))
            console.print(f"@shadow: {was} -> {now}")
        elif sh.get("kept"):
            console.print(f"@shadow: {sh['reason']}")
        if sh.get("error"):
            console.print(f"@shadow not set: {sh['error']}")

    emit(result, as_json, render)


def _flow_params(ctx: typer.Context) -> tuple[str | None, dict | None]:
    """What a deployment's runs need to rebuild these settings: the config file and the global flags."""
    config = getattr(ctx.obj, "config", None)
    overrides = getattr(ctx.obj, "overrides", None)
    return (str(Path(config).resolve()) if config else None), overrides


def deploy(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Register the Prefect deployments (score, retrain, quality, drift, promote) and the alert automation."""
    from rtml.flows.deployments import apply_all
    from rtml.infra.config.clients import prefect_api

    s = settings_of(ctx)
    config, overrides = _flow_params(ctx)
    with prefect_api(s):
        result = apply_all(s, config, overrides)

    def render(r: dict) -> None:
        table(
            "deployments",
            ["deployment", "schedule"],
            [
                [d["deployment"], ", ".join(d["schedules"]) or "by hand / rtml serve"]
                for d in r["deployments"]
            ],
        )
        a = r["alerting"]
        console.print(f"alerting: {a.get('automation', '')} {a['action']} {a.get('reason', '')}".strip())

    emit({"ok": True, **result}, as_json, render)


def serve(ctx: typer.Context, as_json: JsonLinesOpt = False) -> None:
    """Run the deployments on this machine until Ctrl-C: scoring supervisor + scheduled flows."""
    from rtml.flows.deployments import serve as run
    from rtml.infra.config.clients import configure_mlflow, prefect_api

    s = settings_of(ctx)
    configure_mlflow(s)
    config, overrides = _flow_params(ctx)

    def ready(deployments: list[str]) -> None:
        emit(
            {
                "event": "serving",
                "deployments": deployments,
                "prefect_ui": s.prefect_api_url.removesuffix("/api"),
            },
            as_json,
            lambda r: console.print(
                f"serving {len(deployments)} deployments ({', '.join(deployments)}); "
                f"runs show in the Prefect UI at {r['prefect_ui']}; Ctrl-C stops"
            ),
        )

    try:
        with prefect_api(s):
            run(s, config, overrides, on_ready=ready)
    finally:
        emit({"event": "stopped"}, as_json, lambda r: console.print("stopped serving"))
