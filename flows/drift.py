"""Drift flow: compare the recent window with the champion's reference and page on what moved.

Inputs and scores of the last ``drift.window`` (scores sink) against the champion's reference
profile; live precision / recall / F1 and ADWIN on the labelled feedback of the last
``drift.performance_window``. Each finding becomes a ``rtml.drift.<kind>`` Prefect event (at most
one per model version, feature and kind per ``drift.cooldown``), which the alert automation sends
to the on-call notification block. A finding counts as sent only when that route exists and the
Prefect server recorded the notification; otherwise it says ``not routed: <why>`` or
``not sent: <why>``. The report (plots + statistics) goes to MLflow and Prefect.

    python -m rtml.flows.drift            # one check against the configured services
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from rtml.infra.config.settings import Settings, load_settings
from rtml.infra.config.spec import StreamSpec, load_spec, parse_duration_seconds


class DriftCheckError(RuntimeError):
    """The check cannot run (no champion, no reference profile); one-line reason."""

    one_line = True  # the run fails with this message, no traceback (rtml.flows.failures)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def champion_reference(settings: Settings) -> dict[str, Any]:
    """Champion version, its reference profile and its holdout precision / recall / F1."""
    from rtml.models.lifecycle.registry import CHAMPION, alias_version, client
    from rtml.models.monitoring.importance import importance_from_metrics
    from rtml.models.monitoring.profile import load_profile

    version = alias_version(settings, CHAMPION)
    if version is None:
        raise DriftCheckError(f"no @{CHAMPION} of model '{settings.mlflow.model_name}': run `rtml bootstrap`")
    profile = load_profile(settings, version)
    if profile is None:
        raise DriftCheckError(f"v{version} has no reference profile (reference/profile.json): retrain it")
    run_id = client(settings).get_model_version(settings.mlflow.model_name, version).run_id
    metrics = client(settings).get_run(run_id).data.metrics
    holdout = {m: metrics[f"holdout_{m}"] for m in ("precision", "recall", "f1") if f"holdout_{m}" in metrics}
    importance = importance_from_metrics(metrics)  # mean |contribution| on its holdout
    return {"version": version, "profile": profile, "holdout": holdout, "importance": importance}


@task(cache_policy=NO_CACHE)
def recent_scores(settings: Settings, window: str) -> Any:
    from rtml.pipelines.sinks import read_sink

    since = int(time.time() * 1000) - parse_duration_seconds(window) * 1000
    return read_sink(settings, "scores", since)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def labelled_feedback(settings: Settings, spec: StreamSpec, version: str) -> Any:
    """Labelled events the champion served in the performance window, oldest first (read only: the
    labels flow maintains the table)."""
    from rtml.pipelines.labelled import read_labelled

    since = int(time.time() * 1000) - parse_duration_seconds(settings.drift.performance_window) * 1000
    frame = read_labelled(settings, since)
    if frame.empty or spec.label is None:
        return frame
    return frame[(frame["model_version"].astype(str) == version) & frame[spec.label.field].notna()]


@task(cache_policy=NO_CACHE)
def check(
    settings: Settings, spec: StreamSpec, ref: dict[str, Any], scores: Any, labelled: Any, window: str
) -> tuple[list[Any], dict[str, Any]]:
    from rtml.models.monitoring.drift import input_findings, performance_findings

    cfg = settings.drift
    findings, stats = [], {}
    if len(scores) >= cfg.min_events:
        features = cfg.features or [f.name for f in spec.features]
        findings, stats = input_findings(ref["profile"], scores, features, cfg, window)
    perf_stats: dict[str, Any] = {}
    if spec.label is not None and spec.task == "classification" and len(labelled):
        perf, perf_stats = performance_findings(
            labelled, spec.label.field, ref["holdout"], cfg, settings.drift.performance_window
        )
        findings += perf
    return findings, {"inputs": stats, "performance": perf_stats}


@task(cache_policy=NO_CACHE)  # no retries: a retry after a claimed page would read "cooldown"
def alert(settings: Settings, version: str, findings: list[Any]) -> dict[str, Any]:
    """Page each finding unless its (version, feature, kind) was paged within the cooldown.

    Returns the route (``ok``, ``why``) and each finding's status: ``sent`` (the Prefect server
    recorded the notification), ``cooldown``, ``not routed: <why>`` or ``not sent: <why>``.
    """
    from rtml.models.monitoring.alerts import Page, page

    cooldown = parse_duration_seconds(settings.drift.cooldown)
    timeout = parse_duration_seconds(settings.alerts.delivery_timeout)
    pages = [Page(f.key, f.event, f.payload(), f.severity) for f in findings]
    status, route = page(settings, version, pages, cooldown, timeout)
    return {"route": {"automation": route.automation, "ok": route.ok, "why": route.why}, "status": status}


@task(retries=1, cache_policy=NO_CACHE)
def report(settings: Settings, ref: dict[str, Any], scores: Any, stats: dict[str, Any], summary: dict) -> str:
    """Plots + statistics as MLflow artifacts of a ``drift-check`` run; the table as a Prefect artifact."""
    import mlflow

    from rtml.infra.config.clients import configure_mlflow
    from rtml.models.monitoring.drift_report import figure, markdown

    configure_mlflow(settings)
    mlflow.set_experiment(settings.mlflow.experiment)
    with mlflow.start_run(run_name="drift-check") as run:
        mlflow.set_tags(
            {
                "rtml.drift.champion_version": ref["version"],
                "rtml.drift.findings": str(len(summary["findings"])),
                "rtml.drift.alerts_sent": ",".join(summary["alerts_sent"]),
            }
        )
        importance = ref.get("importance", {})
        mlflow.log_dict({**summary, "statistics": stats, "importance": importance}, "drift/report.json")
        if stats["inputs"]:
            import matplotlib.pyplot as plt

            fig = figure(ref["profile"], scores, stats["inputs"], importance)
            mlflow.log_figure(fig, "drift/report.png")
            plt.close(fig)
    create_markdown_artifact(
        key="rtml-drift-report",
        markdown=markdown(summary, ref.get("importance"))
        + f"\n\nPlots: MLflow run `{run.info.run_id}` (`drift/report.png`).",
        description=f"drift check of v{ref['version']}",
    )
    return run.info.run_id


@flow(name="rtml-drift", log_prints=True)
def drift_flow(
    config_file: str | None = None, overrides: dict[str, Any] | None = None, window: str | None = None
) -> dict[str, Any]:
    """One drift check; returns a JSON-able summary (findings, alerts sent, retrain triggered)."""
    from pathlib import Path

    from rtml.flows.failures import one_line_failures

    one_line_failures()
    settings = load_settings(Path(config_file) if config_file else None, overrides)
    spec = load_spec(settings.spec)
    window = window or settings.drift.window
    parse_duration_seconds(window)  # a bad window fails here, in one line
    logger = get_run_logger()
    ref = champion_reference(settings)
    scores = recent_scores(settings, window)
    labelled = labelled_feedback(settings, spec, ref["version"])
    findings, stats = check(settings, spec, ref, scores, labelled, window)
    paged = alert(settings, ref["version"], findings)
    status = paged["status"]
    sent = [key for key, st in status.items() if st == "sent"]
    summary: dict[str, Any] = {
        "model": settings.mlflow.model_name,
        "champion": ref["version"],
        "window": window,
        "events": int(len(scores)),
        "labelled": int(len(labelled)),
        "verdict": "drift" if findings else "stable",
        "findings": [{**f.payload(), "severity": f.severity, "alert": status[f.key]} for f in findings],
        "alerts_sent": sent,
        "route": paged["route"],
        "retrain": None,
    }
    if len(scores) < settings.drift.min_events:
        summary["verdict"] = "drift" if findings else "insufficient data"
        summary["note"] = f"{len(scores)} events in the window, fewer than drift.min_events"
    summary["mlflow_run_id"] = report(settings, ref, scores, stats, summary)
    fresh = [key for key, st in status.items() if st != "cooldown"]  # not paged within the cooldown
    if fresh and settings.drift.retrain_on_drift:
        from rtml.flows.retrain import retrain_flow

        outcome = retrain_flow(config_file=config_file, overrides=overrides, trigger="drift")
        summary["retrain"] = {
            k: outcome.get(k) for k in ("outcome", "reason", "challenger", "champion_after")
        }
    logger.info(f"drift check v{ref['version']}: {summary['verdict']}, alerts sent: {sent or 'none'}")
    for key, st in status.items():
        if st.startswith("not "):
            logger.warning(f"drift finding {key}: {st}")
    return summary


if __name__ == "__main__":
    print(drift_flow())
