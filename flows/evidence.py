"""The retrain decision step beyond the holdout: promotion on live ``@shadow`` evidence
(``promotion.evidence: shadow | both``) and the automatic ``@shadow`` (``promotion.shadow``).

The logic is in :mod:`rtml.models.evaluation.evidence` (pure), :mod:`rtml.pipelines.shadow` (the
labelled live rows) and :mod:`rtml.models.lifecycle` (audited alias moves); these tasks wire them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec

USER = "rtml-retrain"


@task(cache_policy=NO_CACHE)
def judge_live(settings: Settings, spec: StreamSpec, champion_version: str) -> Any:
    """The :class:`~rtml.models.evaluation.evidence.Evidence` on the current ``@shadow``: its live
    decision against ``champion_version`` on the labelled events that champion served (and, for
    ``both``, its own recorded holdout verdict and the champion that verdict was against)."""
    from rtml.models.evaluation.evidence import judge_shadow, live_decision
    from rtml.models.evaluation.tasks import is_regression, targets
    from rtml.models.lifecycle.registry import SHADOW, alias_version, client
    from rtml.models.lifecycle.shadow import shadowed_at_ms
    from rtml.models.training.retrain import policy_of
    from rtml.pipelines.shadow import labelled_live_rows

    shadow = alias_version(settings, SHADOW)
    live = verdict = against = since = None
    if shadow is not None and shadow != champion_version:
        rows, _ = labelled_live_rows(settings, spec, shadow, champion_version=champion_version)
        regression = is_regression(spec)
        col = "score" if regression else "decision"
        y, champ, shad = (
            (targets(rows, spec), rows[f"champion_{col}"].to_numpy(), rows[col].to_numpy())
            if len(rows)
            else (np.zeros(0), np.zeros(0), np.zeros(0))
        )
        live = live_decision(policy_of(settings), regression, y, champ, shad)
        tags = client(settings).get_model_version(settings.mlflow.model_name, shadow).tags or {}
        verdict = tags.get("rtml.holdout_verdict", tags.get("rtml.decision"))
        against = tags.get("rtml.compared_with")
        since = shadowed_at_ms(tags)
    evidence = judge_shadow(settings.promotion.evidence, champion_version, shadow, live, verdict, against)
    return replace(evidence, shadowed_at_ms=since)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def promote_on_evidence(settings: Settings, evidence: Any, trigger: str) -> dict[str, Any] | None:
    """Record the live evidence on the ``@shadow`` version; move ``@champion`` to it when the
    evidence promotes (audited, only if the champion is still the one it was judged against)."""
    from rtml.models.lifecycle.aliases import move_champion
    from rtml.models.training.retrain import record_live

    record_live(settings, evidence)
    if not evidence.promote:
        return None
    live = evidence.live
    return move_champion(
        settings,
        evidence.version,
        kind="auto",
        reason=evidence.reason,
        user=USER,
        extra={
            "trigger": trigger,
            "evidence": evidence.mode,
            "live": {"n": live.holdout_n, "positives": live.holdout_positives},
            "deltas": live.deltas,
        },
        if_champion_is=evidence.champion_version,
    )


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def auto_shadow(
    settings: Settings,
    spec: StreamSpec,
    champion_before: str,
    champion_after: str,
    candidate: str,
    decision: Any,
    waiting: str | None = None,
    waiting_why: str = "",
) -> dict[str, Any]:
    """After a decision: a promotion clears a ``@shadow`` that is now the champion (always) or older
    than it (with ``promotion.shadow``); with ``promotion.shadow`` the round's best candidate, when
    it was not promoted, becomes ``@shadow``. Both through the audited path of ``rtml shadow``.

    ``waiting`` names a ``@shadow`` whose live evidence this round had too few labelled events to
    decide: it stays, and the candidate is not shadowed (replaced every round, a shadow was never
    judged when labels take longer than one round to arrive); ``waiting_why`` is its live evidence's
    reason (how many labelled events it has), said in the log line and the summary."""
    from rtml.models.lifecycle.audit import LifecycleError
    from rtml.models.lifecycle.registry import SHADOW, alias_version
    from rtml.models.lifecycle.shadow import clear_shadow, set_shadow

    before = alias_version(settings, SHADOW)
    out: dict[str, Any] = {"before": before, "cleared": None, "set": None}
    promoted = champion_after != champion_before
    auto = settings.promotion.shadow
    if (
        before is not None
        and promoted
        and (before == champion_after or (auto and int(before) < int(champion_after)))
    ):
        now = (
            "now the champion"
            if before == champion_after
            else f"older than the new champion v{champion_after}"
        )
        clear_shadow(
            settings, f"automatic: the retrain promoted v{champion_after}; shadow v{before} is {now}", USER
        )
        out["cleared"] = before
    if auto and candidate != champion_after and waiting is not None and waiting == before:
        out["kept"] = before
        out["reason"] = f"v{before} kept: still waiting for live evidence (v{candidate} not shadowed)"
        out["reason"] += f": {waiting_why}" if waiting_why else ""
        get_run_logger().info(f"promotion.shadow: {out['reason']}")
    elif auto and candidate != champion_after:
        reason = (
            f"automatic (promotion.shadow): best candidate of the retrain decision v{candidate} vs "
            f"champion v{champion_before}, {decision.outcome}: {decision.reason[:300]}"
        )
        try:
            set_shadow(settings, spec, candidate, reason, USER)
            out["set"] = candidate
        except LifecycleError as exc:  # the decision stands; say why no shadow was set
            out["error"] = str(exc)
            get_run_logger().warning(f"promotion.shadow: v{candidate} not shadowed: {exc}")
    out["after"] = alias_version(settings, SHADOW)
    return out


def _waiting(settings: Settings, evidence: Any, champion: str) -> str | None:
    """The ``@shadow`` to keep for a later round: its live evidence had too few labelled events to
    decide, it can still win (under ``both`` its own holdout decision promotes against this
    champion), and it was shadowed less than ``drift.performance_window`` ago (the live rows' window:
    past it, more rounds will not decide it, and it is replaced with a warning)."""
    import time

    from rtml.infra.config.spec import parse_duration_seconds

    live, version = evidence.live, evidence.version
    if version is None or live is None or live.outcome != "no_decision":
        return None
    own = (evidence.holdout_verdict, evidence.holdout_against)
    if evidence.mode == "both" and own != ("promote", champion):
        return None  # it cannot be promoted: the next candidate may
    since = evidence.shadowed_at_ms
    window_ms = parse_duration_seconds(settings.drift.performance_window) * 1000
    if since is not None and time.time() * 1000 - since > window_ms:
        get_run_logger().warning(
            f"promotion.shadow: v{version} undecided for longer than drift.performance_window "
            f"({settings.drift.performance_window}): {live.reason}; replaced"
        )
        return None
    return version


def evidence_step(
    settings: Settings,
    spec: StreamSpec,
    champion_before: str,
    champion_now: str,
    trigger: str,
    candidate: str,
    decision: Any,
) -> dict[str, Any]:
    """The retrain's decision step after the holdout verdicts are recorded: live evidence on
    @shadow (``promotion.evidence: shadow | both``; may promote it) and the automatic @shadow
    (``promotion.shadow``). Returns the summary keys they set."""
    out: dict[str, Any] = {"champion_after": champion_now}
    waiting, waiting_why = None, ""
    if settings.promotion.evidence != "holdout":
        evidence = judge_live(settings, spec, champion_before)
        out["evidence"] = evidence.to_dict()
        moved = promote_on_evidence(settings, evidence, trigger)
        if moved is not None:
            out.update(outcome="promote", reason=evidence.reason, promoted=evidence.version)
            out["champion_after"] = moved["champion"]
        else:
            waiting = _waiting(settings, evidence, champion_before)
            waiting_why = evidence.live.reason if waiting else ""
        get_run_logger().info(evidence.reason)
    out["shadow"] = auto_shadow(
        settings, spec, champion_before, out["champion_after"], candidate, decision, waiting, waiting_why
    )
    return out
