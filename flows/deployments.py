"""Deployments of rtml's flows, with schedules from the settings; one set per registered model.

| deployment | flow | schedule |
|---|---|---|
| ``rtml-score/<model>`` | scoring job supervisor (long-running) | started by ``rtml serve`` |
| ``rtml-labels/<model>`` | labels + incremental labelled table | ``retrain.labels_schedule_cron`` (5 min) |
| ``rtml-retrain/<model>`` | retrain + promotion decision | ``retrain.schedule_cron`` (every 15 min) |
| ``rtml-quality/<model>`` | GE suites over the last window | ``quality.schedule_cron`` (every 10 min) |
| ``rtml-drift/<model>`` | drift check + alerts | ``drift.schedule_cron`` (every 5 min) |
| ``rtml-maintain/<model>`` | compaction, retention, vacuum | ``maintenance.schedule_cron`` (daily) |
| ``rtml-promote/<model>`` | manual promotion (parameters ``version``, ``reason``) | by hand |

``rtml deploy`` registers them (idempotent: same names, updated in place) and the alert automation;
``rtml serve`` registers them and runs them on this machine until stopped (SIGTERM or Ctrl-C: the
scoring job stops after its micro-batch and the deployments keep their schedules, not paused).
Flow parameters carry ``config_file`` and the non-secret ``overrides``; secrets reach the runs
through the environment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rtml.infra.config.settings import Settings

FLOWS = ("score", "labels", "retrain", "quality", "drift", "maintain", "promote")


def build(
    settings: Settings, config_file: str | None = None, overrides: dict[str, Any] | None = None
) -> list:
    """RunnerDeployments (module-path entrypoints, so any working directory can run them)."""
    from prefect.types.entrypoint import EntrypointType

    from rtml.flows.drift import drift_flow
    from rtml.flows.labels import labels_flow
    from rtml.flows.maintain import maintain_flow
    from rtml.flows.promote import promote_flow
    from rtml.flows.quality import quality_flow
    from rtml.flows.retrain import retrain_flow
    from rtml.flows.score import score_flow

    name = settings.mlflow.model_name
    params: dict[str, Any] = {"config_file": config_file, "overrides": overrides}
    common: dict[str, Any] = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["rtml", name]}
    if settings.prefect.work_pool:  # run by a Prefect worker polling the pool, not by `rtml serve`
        common["work_pool_name"] = settings.prefect.work_pool
    return [
        score_flow.to_deployment(
            name=name,
            parameters=params,
            concurrency_limit=1,
            description="Long-running: supervises the scoring job (restarts it from its checkpoint).",
            **common,
        ),
        labels_flow.to_deployment(
            name=name,
            cron=settings.retrain.labels_schedule_cron,
            parameters=params,
            concurrency_limit=1,
            description="The labelled table's one writer: new labels and expired horizons, incrementally.",
            **common,
        ),
        retrain_flow.to_deployment(
            name=name,
            cron=settings.retrain.schedule_cron,
            parameters={**params, "trigger": "schedule"},
            concurrency_limit=1,
            description="Incremental retrain on newly labelled events; promotes only a better challenger.",
            **common,
        ),
        quality_flow.to_deployment(
            name=name,
            cron=settings.quality.schedule_cron,
            parameters=params,
            description="Great Expectations suites over the last window of scored events.",
            **common,
        ),
        drift_flow.to_deployment(
            name=name,
            cron=settings.drift.schedule_cron,
            parameters=params,
            concurrency_limit=1,
            description="Drift check against the champion's reference; pages on-call once per problem.",
            **common,
        ),
        maintain_flow.to_deployment(
            name=name,
            cron=settings.maintenance.schedule_cron,
            parameters=params,
            concurrency_limit=1,
            description="Compacts small files, applies retention (never inside the label horizon or a "
            "retrain/drift window), vacuums unreferenced files.",
            **common,
        ),
        promote_flow.to_deployment(
            name=name,
            parameters=params,
            description="Manual promotion: run with `version` and `reason` (bypasses the metric gate).",
            **common,
        ),
    ]


def apply_all(
    settings: Settings, config_file: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Register every deployment and the alert automation; returns what is registered."""
    from rtml.flows.alerting import AlertingError, ensure_alerting

    registered = []
    for d in build(settings, config_file, overrides):
        d.apply()
        registered.append(
            {
                "deployment": f"{d.flow_name}/{d.name}",
                "schedules": [str(getattr(s.schedule, "cron", s.schedule)) for s in d.schedules or []],
            }
        )
    try:
        alerting: dict[str, Any] = ensure_alerting(settings)
    except AlertingError as exc:
        alerting = {"action": "skipped", "reason": str(exc)}
    return {"deployments": registered, "alerting": alerting}


def serve(
    settings: Settings,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    on_ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Register and run the deployments here until stopped; starts the scoring supervisor once.

    ``on_ready`` is told the deployments' names once they are registered, before serving blocks.
    """
    from prefect import serve as prefect_serve
    from prefect.deployments import run_deployment

    deployments = build(settings, config_file, overrides)
    applied = apply_all(settings, config_file, overrides)
    run_deployment(f"rtml-score/{settings.mlflow.model_name}", timeout=0)  # the runner picks it up
    if on_ready is not None:
        on_ready([d["deployment"] for d in applied["deployments"]])
    # Prefect's serve pauses every served deployment on shutdown by default; a stop (SIGTERM, Ctrl-C)
    # of `rtml serve` must leave the schedules as they are, so that the next `rtml serve` (or any
    # other runner) picks them up without anyone resuming them by hand.
    prefect_serve(*deployments, limit=len(deployments) + 2, pause_on_shutdown=False)
