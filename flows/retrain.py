"""Retrain flow: labels -> labelled window -> quality gate -> challenger -> same-holdout decision ->
new MLflow version -> promotion by moving aliases. The flow only orchestrates; the work is in
``rtml.flows.labels`` (the labelled table's writer), ``rtml.models.training.challenger``,
``rtml.models.training.retrain`` and ``rtml.models.lifecycle.aliases``.

    python -m rtml.flows.retrain            # one run against the configured services
"""

from __future__ import annotations

import time
from typing import Any, Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from rtml.infra.config.settings import Settings, load_settings
from rtml.infra.config.spec import StreamSpec, load_spec


def refresh_labelled(settings: Settings, spec: StreamSpec) -> dict[str, Any]:
    """Bring the labelled table up to date through its one writer (the labels flow's body, under
    its lock): a retrain trains on every label that has arrived."""
    from rtml.flows.labels import run_labels

    return run_labels(settings, spec)


@task(cache_policy=NO_CACHE)
def select_window(settings: Settings, spec: StreamSpec, watermark_ms: int) -> Any:
    from rtml.expectations.training import quarantined_ids
    from rtml.models.training.challenger import select_window as select
    from rtml.pipelines.labelled import labelled_version, read_labelled

    since = watermark_ms
    if settings.retrain.mode == "full":
        from rtml.infra.config.spec import parse_duration_seconds

        since = min(
            since, int(time.time() * 1000) - parse_duration_seconds(settings.retrain.sliding_window) * 1000
        )
    version = labelled_version(settings)  # lineage: the window is re-readable at this version
    labelled = read_labelled(settings, since, version)
    excluded = quarantined_ids(settings, spec.event_id)
    if excluded and len(labelled):
        labelled = labelled[~labelled[spec.event_id].astype(str).isin(excluded)]
    window = select(labelled, spec, settings, watermark_ms)
    if version is not None:  # lineage: MLflow params, the rtml.labelled_* tags, `rtml models --json`
        window.info |= {"labelled_table_version": version, "labelled_since_ms": int(since)}
    return window


@task(cache_policy=NO_CACHE)
def read_batch_file(spec: StreamSpec, path: str) -> Any:
    """A labelled batch from a file (backfill): raw event fields + label, as given (the gate checks)."""
    from rtml.expectations.gate import prepare

    frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    return prepare(frame, spec)


@task(cache_policy=NO_CACHE)
def window_of_batch(settings: Settings, spec: StreamSpec, raw: Any) -> Any:
    """Features of a gated batch file, every row new (the file is the window)."""
    from rtml.features.featurise import featurise_history
    from rtml.models.training.challenger import select_window as select

    return select(featurise_history(raw, spec), spec, settings, watermark_ms=-1)


@task(cache_policy=NO_CACHE)
def quality_gate(
    settings: Settings,
    spec: StreamSpec,
    frame: Any,
    champion_version: str,
    trigger: str,
    source: str | None,
    champion_model: Any = None,
) -> Any:
    """Great Expectations training-batch suite (labels checked against the champion's confident
    scores too); a failure quarantines the batch, alerts, and raises."""
    from rtml.expectations.training import (
        QualityGateFailed,
        check_training_batch,
        failure_message,
        quarantine_batch,
    )
    from rtml.models.monitoring.alerts import emit_alert
    from rtml.models.monitoring.profile import load_profile

    tags = {"rtml.trigger": trigger, "rtml.champion_version": champion_version, "rtml.gate": "retrain"}
    reference = load_profile(settings, champion_version)
    result = check_training_batch(settings, spec, frame, reference, tags, champion=champion_model)
    for name, why in result.skipped.items():
        get_run_logger().warning(f"training gate: {name} skipped: {why}")
    if result.passed:
        return result.summary()
    from pathlib import Path

    where = quarantine_batch(settings, frame, result, Path(source) if source else None)
    emit_alert(
        settings,
        "rtml.quality.failed",
        champion_version,
        {
            "kind": "quality",
            "suite": result.suite,
            "failed": result.failed_names(),
            "quarantine": where,
            "mlflow_run_id": result.mlflow_run_id,
        },
        severity="critical",
    )
    raise QualityGateFailed(failure_message(result, where))


@task(cache_policy=NO_CACHE)
def fresh_window(
    settings: Settings, spec: StreamSpec, champion_model: Any, window: Any, candidates: list[Any]
) -> tuple[Any, Any, dict[str, Any]]:
    """(the window every candidate is judged on and ``continue`` trains on, the window fresh
    candidates train on, what was found): fresh candidates train from the change point in the
    champion's labelled error stream when one is detected (``retrain.fresh_since_change``); a change
    too recent to train after within the training rows moves the holdout after it."""
    from rtml.models.training.change_point import candidate_windows, describe_windows

    fresh = any(c.start == "fresh" for c in candidates)
    judged, recent, change = candidate_windows(settings, spec, champion_model, window, fresh)
    if recent is not window:
        get_run_logger().info(describe_windows(change, judged, recent))
    return judged, recent, change


@task(retries=1, cache_policy=NO_CACHE)
def train(
    settings: Settings, spec: StreamSpec, champion_model: Any, window: Any, candidate: Any
) -> tuple[Any, dict[str, Any]]:
    """One candidate trained on the window: (learner, how its threshold was chosen)."""
    from rtml.models.training.challenger import train_challenger

    fresh = candidate.start == "fresh"
    own_family = candidate.family in (None, settings.model.family)
    choice: dict[str, Any] = {}
    learner = train_challenger(
        champion_model,
        window,
        spec,
        "full" if fresh else "incremental",
        family=candidate.family or settings.model.family,
        params=settings.model.params if own_family else None,
        epochs=settings.retrain.epochs,
        record=choice,
    )
    return learner, choice


@task(cache_policy=NO_CACHE)
def evaluate(settings: Settings, spec: StreamSpec, champion_model: Any, learner: Any, window: Any) -> Any:
    from rtml.models.training.retrain import evaluate as judge
    from rtml.models.training.retrain import policy_of

    return judge(policy_of(settings), spec, champion_model, learner, window)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def register(
    settings: Settings,
    spec: StreamSpec,
    trained: tuple[Any, dict[str, Any]],
    window: Any,
    decision: Any,
    parent: str,
    trigger: str,
    watermark_ms: int,
    champion_model: Any,
    candidate: str,
) -> str:
    from rtml.models.training.retrain import max_event_ms, register_challenger

    learner, choice = trained
    reg = register_challenger(
        settings,
        spec,
        learner,
        window,
        decision,
        parent,
        trigger,
        max(watermark_ms, max_event_ms(window.train)),
        champion_model,
        candidate=candidate,
        threshold_choice=choice,
    )
    return reg.version


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def apply_decision(
    settings: Settings,
    champion_version: str,
    challenger_version: str,
    decision: Any,
    trigger: str,
    others: dict[str, Any] | None = None,
    verdicts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Record the verdicts (``others``: the round's other candidates, version -> decision;
    ``verdicts``: version -> holdout verdict where ``promotion.evidence`` held it back) and move
    @champion when the one put up is promoted."""
    from rtml.models.lifecycle.aliases import move_champion
    from rtml.models.training.retrain import record_decision

    mode, verdicts = settings.promotion.evidence, verdicts or {}
    for version, other in (others or {}).items():
        record_decision(
            settings, champion_version, version, other, challenger_version, mode, verdicts.get(version)
        )
    record_decision(
        settings, champion_version, challenger_version, decision, None, mode, verdicts.get(challenger_version)
    )
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
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    trigger: Literal["schedule", "drift", "manual"] = "schedule",
    batch_file: str | None = None,
) -> dict[str, Any]:
    """One retrain round; returns a JSON-able summary with the decision.

    ``batch_file``: train on this labelled batch (Parquet/CSV of event fields + label) instead of
    the labelled store; it passes the same quality gate and is moved to quarantine if it fails.
    """
    from pathlib import Path

    from rtml.models.training.retrain import champion, check_trigger

    check_trigger(trigger)  # also when called as .fn(), which skips Prefect's parameter validation
    settings = load_settings(Path(config_file) if config_file else None, overrides)
    spec = load_spec(settings.spec)
    logger = get_run_logger()
    champ_version, champ_model, watermark = champion(settings)
    if batch_file:
        raw = read_batch_file(spec, batch_file)
        labelled = {"batch_file": batch_file, "rows": len(raw)}
        gate = quality_gate(settings, spec, raw, champ_version, trigger, batch_file, champ_model)
        window = window_of_batch(settings, spec, raw)
    else:
        labelled = refresh_labelled(settings, spec)
        window = select_window(settings, spec, watermark)
        gate = None
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
    if gate is None:
        frame = window.labelled  # train, validation and holdout: every row is gated
        gate = quality_gate(settings, spec, frame, champ_version, trigger, None, champ_model)
    summary["quality_gate"] = gate
    from rtml.models.training.candidates import choose, parse_candidates

    names = settings.retrain.candidates or ["continue" if settings.retrain.mode == "incremental" else "fresh"]
    candidates = parse_candidates(names)
    window, recent, change = fresh_window(settings, spec, champ_model, window, candidates)
    summary["change_point"] = change
    if change.get("holdout") == "after the change":  # a recent change moved the holdout after it
        summary["window_as_selected"], summary["window"] = summary["window"], window.info
    windows = [recent if c.start == "fresh" else window for c in candidates]  # same holdout
    trained = [train(settings, spec, champ_model, w, c) for c, w in zip(candidates, windows, strict=True)]
    decisions = [evaluate(settings, spec, champ_model, t[0], window) for t in trained]
    chosen = choose(spec, decisions)
    versions = [
        register(settings, spec, t, w, d, champ_version, trigger, max(watermark, 0), champ_model, c.name)
        for c, t, w, d in zip(candidates, trained, windows, decisions, strict=True)
    ]
    from rtml.flows.evidence import evidence_step
    from rtml.models.evaluation.evidence import hold_back

    mode = settings.promotion.evidence  # shadow | both: only live evidence promotes
    held = [hold_back(mode, d) for d in decisions]
    verdicts = {v: d.outcome for v, d in zip(versions, decisions, strict=True)}
    version, decision = versions[chosen], held[chosen]
    others = {v: d for i, (v, d) in enumerate(zip(versions, held, strict=True)) if i != chosen}
    applied = apply_decision(settings, champ_version, version, decision, trigger, others, verdicts)
    summary.update(
        outcome=decision.outcome,
        reason=decision.reason,
        challenger=version,
        decision=decision.table(),
        holdout={"n": decision.holdout_n, "positives": decision.holdout_positives},
        promoted=version if decision.promote else None,
        evidence={"mode": mode},
    )
    summary.update(
        evidence_step(settings, spec, champ_version, applied["champion"], trigger, version, decision)
    )
    if len(candidates) > 1:
        summary["candidates"] = [
            {
                "candidate": c.name,
                "version": v,
                "outcome": d.outcome,
                "put_up": i == chosen,
                "train_rows": w.info.get("train_rows"),
                **d.challenger,
            }
            for i, (c, v, d, w) in enumerate(zip(candidates, versions, held, windows, strict=True))
        ]
    logger.info(f"challenger v{version}: {decision.outcome} ({decision.reason})")
    return summary


if __name__ == "__main__":
    print(retrain_flow())
