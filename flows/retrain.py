"""Retrain flow: labels -> labelled window -> quality gate -> challenger -> same-holdout decision ->
new MLflow version -> promotion by moving aliases. The flow only orchestrates; the work is in
``pipelines.labels``, ``models.training``, ``models.retrain`` and ``models.lifecycle``.

    python -m flows.retrain            # one run against the configured services
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from infra.settings import Settings, load_settings
from infra.spec import StreamSpec, load_spec


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def refresh_labelled(settings: Settings, spec: StreamSpec) -> dict[str, int]:
    from pipelines.labels import build_labelled, ingest_labels

    return {**ingest_labels(settings, spec), **build_labelled(settings, spec)}


@task(cache_policy=NO_CACHE)
def select_window(settings: Settings, spec: StreamSpec, watermark_ms: int) -> Any:
    from models.training import select_window as select
    from pipelines.labels import read_labelled

    if settings.retrain.mode == "full":
        from infra.spec import parse_duration_seconds

        since = int(time.time() * 1000) - parse_duration_seconds(settings.retrain.sliding_window) * 1000
        return select(read_labelled(settings, min(since, watermark_ms)), spec, settings, watermark_ms)
    return select(read_labelled(settings, watermark_ms), spec, settings, watermark_ms)


@task(cache_policy=NO_CACHE)
def quality_gate(settings: Settings, spec: StreamSpec, window: Any) -> dict[str, Any]:
    """Data-quality hook: the Great Expectations training-batch gate plugs in here."""
    from expectations import gate_training_batch

    return gate_training_batch(settings, spec, window)


@task(retries=1, cache_policy=NO_CACHE)
def train(settings: Settings, spec: StreamSpec, champion_model: Any, window: Any) -> Any:
    from models.training import train_challenger

    return train_challenger(champion_model, window, spec, settings.retrain.mode)


@task(cache_policy=NO_CACHE)
def evaluate(settings: Settings, spec: StreamSpec, champion_model: Any, learner: Any, window: Any) -> Any:
    from models.retrain import evaluate as judge
    from models.retrain import policy_of

    return judge(policy_of(settings), spec, champion_model, learner, window)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def register(
    settings: Settings, spec: StreamSpec, learner: Any, window: Any, decision: Any, parent: str, trigger: str
) -> str:
    from models.retrain import max_event_ms, register_challenger

    reg = register_challenger(
        settings, spec, learner, window, decision, parent, trigger, max_event_ms(window.train)
    )
    return reg.version


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def apply_decision(
    settings: Settings, champion_version: str, challenger_version: str, decision: Any, trigger: str
) -> dict[str, Any]:
    from models.lifecycle import move_champion
    from models.retrain import record_decision

    record_decision(settings, champion_version, challenger_version, decision)
    create_table_artifact(
        key="rtml-promotion-decision",
        table=decision.table(),
        description=f"v{challenger_version} vs champion v{champion_version}: "
        f"**{decision.outcome}** -- {decision.reason}",
    )
    if decision.promote:
        return move_champion(
            settings,
            challenger_version,
            kind="auto",
            reason=decision.reason,
            user="rtml-retrain",
            extra={"trigger": trigger, "deltas": decision.deltas},
        )
    return {"champion": champion_version}


@flow(name="rtml-retrain", log_prints=True)
def retrain_flow(
    config_file: str | None = None, overrides: dict[str, Any] | None = None, trigger: str = "schedule"
) -> dict[str, Any]:
    """One retrain round; returns a JSON-able summary with the decision."""
    from pathlib import Path

    from models.retrain import champion

    settings = load_settings(Path(config_file) if config_file else None, overrides)
    spec = load_spec(settings.spec)
    logger = get_run_logger()
    labelled = refresh_labelled(settings, spec)
    champ_version, champ_model, watermark = champion(settings)
    window = select_window(settings, spec, watermark)
    summary: dict[str, Any] = {
        "trigger": trigger,
        "champion_before": champ_version,
        "labelled": labelled,
        "window": window.info,
    }
    if window.info["new_rows"] < settings.retrain.min_new_rows or window.empty:
        summary.update(
            outcome="skipped",
            reason=f"{window.info['new_rows']} new labelled rows, fewer than "
            f"retrain.min_new_rows={settings.retrain.min_new_rows}",
            champion_after=champ_version,
        )
        logger.info(summary["reason"])
        return summary
    gate = quality_gate(settings, spec, window)
    summary["quality_gate"] = gate
    if not gate["passed"]:
        raise RuntimeError(f"training batch failed data-quality gate: {', '.join(gate['failed'])}")
    learner = train(settings, spec, champ_model, window)
    decision = evaluate(settings, spec, champ_model, learner, window)
    version = register(settings, spec, learner, window, decision, champ_version, trigger)
    applied = apply_decision(settings, champ_version, version, decision, trigger)
    summary.update(
        outcome=decision.outcome,
        reason=decision.reason,
        challenger=version,
        champion_after=applied["champion"],
        decision=decision.table(),
        holdout={"n": decision.holdout_n, "positives": decision.holdout_positives},
    )
    logger.info(f"challenger v{version}: {decision.outcome} ({decision.reason})")
    return summary


if __name__ == "__main__":
    print(retrain_flow())
