"""Data-quality and monitoring commands of the `rtml` CLI: validate, expectations, drift, alerting.

Plain functions; :mod:`rtml.infra.app.cli` registers each one on the app.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from rtml.infra.app.cli_support import (
    CommandError,
    JsonOpt,
    console,
    emit,
    failure_reason,
    settings_of,
    table,
)


def _read_file(path: Path) -> Any:
    import pandas as pd

    if not path.exists():
        raise typer.BadParameter(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".json", ".jsonl"):
            return pd.read_json(path, lines=True)
    except Exception as exc:  # noqa: BLE001 - any reader error is one line for the user
        raise CommandError(
            f"{path}: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    raise typer.BadParameter(f"{path}: unsupported file type '{suffix}' (use .parquet, .csv, .json, .jsonl)")


def _window_frame(settings: Any, spec: Any, suite: str, duration: str) -> Any:
    from rtml.infra.config.spec import parse_duration_seconds
    from rtml.pipelines.sinks import read_sink

    try:
        since = int(time.time() * 1000) - parse_duration_seconds(duration) * 1000
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if suite == "training_batch":
        from rtml.pipelines.labelled import read_labelled

        return read_labelled(settings, since)
    frame = read_sink(settings, "scores", since)
    if suite == "raw_events" and len(frame):
        from rtml.expectations.stream import raw_events_frame

        frame = raw_events_frame(frame, spec)
    return frame


def _guess_suite(frame: Any, spec: Any) -> str:
    if spec.label is not None and spec.label.field in frame:
        return "training_batch"
    return "scores" if "score" in frame else "raw_events"


def _reference(settings: Any) -> tuple[dict | None, Any]:
    """The champion's reference profile and model (label checks), or (None, None) without a registry."""
    try:
        from rtml.models.lifecycle.registry import CHAMPION, alias_version, load_model
        from rtml.models.monitoring.profile import load_profile

        version = alias_version(settings, CHAMPION)
        if not version:
            return None, None
        model = load_model(settings.tracking_uri, settings.mlflow.model_name, version)
        return load_profile(settings, version), model
    except Exception:  # noqa: BLE001 - no registry reachable: validate without reference bounds
        return None, None


def validate(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="CSV / Parquet / JSON-lines file to validate.")] = None,
    window: Annotated[
        str | None, typer.Option(help="Validate the sinks' last DURATION instead, e.g. 15m.")
    ] = None,
    suite: Annotated[
        str | None, typer.Option(help="raw_events | training_batch | scores (default: guessed from columns)")
    ] = None,
    store: Annotated[bool, typer.Option(help="Also store the result + Data Docs in MLflow.")] = False,
    html: Annotated[Path | None, typer.Option(help="Write the rendered Data Docs here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a Great Expectations suite by hand; exit 1 when any expectation fails."""
    from rtml.expectations.gate import column_mismatch, publish
    from rtml.expectations.gate import validate as run_suite
    from rtml.expectations.suites import SUITES
    from rtml.infra.config.spec import load_spec

    if (file is None) == (window is None):
        raise typer.BadParameter("give either FILE or --window DURATION")
    if suite is not None and suite not in SUITES:
        raise typer.BadParameter(f"unknown suite '{suite}' (choose from {', '.join(SUITES)})")
    s = settings_of(ctx)
    spec = load_spec(s.spec)
    if file is not None:
        frame = _read_file(file)
        suite = suite or _guess_suite(frame, spec)
    else:
        suite = suite or "raw_events"
        frame = _window_frame(s, spec, suite, window or "")
    if len(frame) == 0:
        raise CommandError(f"nothing to validate: no rows in {file or f'the last {window}'}")
    mismatch = column_mismatch(frame, suite, spec, s.quality.suites_dir)
    if mismatch:  # the suite cannot judge this data: say which columns, not 19 rows of "observed None"
        raise CommandError(f"{file or f'the last {window}'}: {mismatch} (spec '{spec.name}')")
    reference, champion = _reference(s) if suite == "training_batch" else (None, None)
    result = run_suite(frame, suite, spec, s, reference, champion=champion)
    if html is not None and result.html:
        html.write_text(result.html, encoding="utf-8")
    if store:
        publish(result, s, {"rtml.gate": "manual"})
    out = {"ok": result.passed, **result.summary(), "source": str(file) if file else f"last {window}"}

    def render(r: dict) -> None:
        status = "[green]PASSED[/]" if r["passed"] else "[red]FAILED[/]"
        console.print(f"{status} suite [bold]{r['suite']}[/] on {r['rows']} rows from {r['source']}")
        if r["failed"]:
            table(
                f"{len(r['failed'])} of {r['evaluated']} expectations failed",
                ["expectation", "detail"],
                [f.split(": ", 1) for f in r["failed"]],
            )
        for line in r["skipped"]:
            console.print(f"[yellow]skipped[/] {line}")

    emit(out, as_json, render)
    if not result.passed:
        raise typer.Exit(1)


def expectations(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option(help="Suites directory (default: quality.suites_dir or shipped)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Regenerate the suites of the configured spec, keeping hand-written expectations."""
    from rtml.expectations.suites import write_suites
    from rtml.infra.config.spec import load_spec

    s = settings_of(ctx)
    paths = write_suites(load_spec(s.spec), out or s.quality.suites_dir)
    emit(
        {"ok": True, "written": [str(p) for p in paths]},
        as_json,
        lambda r: console.print("\n".join(r["written"])),
    )


def drift(
    ctx: typer.Context,
    window: Annotated[
        str | None, typer.Option(help="Recent window to check, e.g. 15m (default drift.window).")
    ] = None,
    require_route: Annotated[
        bool,
        typer.Option(
            "--require-route",
            help="Exit 1 when alerts cannot reach on-call: no route, or a finding that was not sent.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a drift check now (Prefect flow): findings, what was paged, report in MLflow.

    A finding is marked sent only when the on-call route exists (`rtml alerting`) and Prefect recorded
    the notification; otherwise it says `not routed: <why>` or `not sent: <why>`.
    """
    from rtml.flows.drift import drift_flow
    from rtml.infra.config.clients import configure_mlflow, prefect_api
    from rtml.infra.config.spec import parse_duration_seconds

    if window is not None:
        try:
            parse_duration_seconds(window)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    s = settings_of(ctx)
    configure_mlflow(s)
    config = getattr(ctx.obj, "config", None)
    with prefect_api(s):
        state = drift_flow(
            config_file=str(config) if config else None,
            overrides=getattr(ctx.obj, "overrides", None),
            window=window,
            return_state=True,
        )
    if state.is_failed():
        raise CommandError(f"drift check failed: {failure_reason(state)}")
    result = state.result()
    unpaged = [f for f in result["findings"] if f["alert"].startswith("not sent")]
    problem = None
    if not result["route"]["ok"]:
        problem = f"not routed: {result['route']['why']}"
    elif unpaged:
        problem = f"{len(unpaged)} finding(s) not sent"
    result = {"ok": not (require_route and problem), **result}

    def render(r: dict) -> None:
        console.print(
            f"[bold]{r['verdict']}[/]: v{r['champion']} of {r['model']}, last {r['window']}: "
            f"{r['events']} events, {r['labelled']} labelled"
        )
        if r["findings"]:
            table(
                "drift findings",
                ["kind", "feature", "statistic", "value", "threshold", "severity", "alert"],
                [
                    [
                        f["kind"],
                        f["feature"],
                        f["statistic"],
                        f"{f['value']:.4g}",
                        f"{f['threshold']:.4g}",
                        f["severity"],
                        f["alert"],
                    ]
                    for f in r["findings"]
                ],
            )
        if not r["route"]["ok"]:
            console.print(f"[red]on-call route: not routed: {r['route']['why']}[/]")
        if r.get("retrain"):
            console.print(f"retrain on drift: {r['retrain']['outcome']} ({r['retrain']['reason']})")

    emit(result, as_json, render)
    if require_route and problem:
        import sys

        sys.stderr.write(f"rtml: --require-route: {problem}\n")
        raise typer.Exit(1)


def alerting(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Create or update the on-call route: notification block (from alerts.webhook_url) + automation."""
    from rtml.flows.alerting import AlertingError, ensure_alerting
    from rtml.infra.config.clients import prefect_api

    s = settings_of(ctx)
    try:
        with prefect_api(s):
            result = ensure_alerting(s)
    except AlertingError as exc:
        raise CommandError(str(exc)) from None
    emit(
        {"ok": True, **result},
        as_json,
        lambda r: console.print(
            f"automation {r['automation']} {r['action']}: {', '.join(r['severities'])} alerts "
            f"-> notification block {r['notification_block']}"
        ),
    )
