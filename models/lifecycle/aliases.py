"""Registry actions: list versions, promote (auto or manual), roll back, bootstrap -- all by moving
aliases, each move under the promotion lock and with an audit record (:mod:`.audit`, :mod:`.lock`).

``@champion`` is the champion; ``@previous-champion`` is where ``rtml rollback`` would go (the audited
champion before it), absent when there is none.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.models.lifecycle.audit import (
    AUDIT_PREFIX,
    POINTER_TAG,
    ChampionMoved,
    ChampionState,
    LifecycleError,
    audit_key,
    history,
    next_stack,
    normalise_version,
    read_state,
    rollback_target,
)
from rtml.models.lifecycle.lock import promotion_lock
from rtml.models.lifecycle.registry import CHAMPION, PREVIOUS, client, tag_version

__all__ = [
    "ChampionMoved",
    "LifecycleError",
    "move_champion",
    "promote_manual",
    "rollback",
    "list_versions",
    "audit_trail",
]
ANY = object()  # move_champion(if_champion_is=ANY): whatever @champion is


def _set_pointer(settings: Settings, pointer: dict[str, Any] | None) -> None:
    c, name = client(settings), settings.mlflow.model_name
    if pointer is None:
        with contextlib.suppress(Exception):  # no tag to delete
            c.delete_registered_model_tag(name, POINTER_TAG)
    else:
        c.set_registered_model_tag(name, POINTER_TAG, json.dumps(pointer, sort_keys=True))


def _exists(settings: Settings, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client(settings).get_model_version(settings.mlflow.model_name, version)
    except MlflowException:
        raise LifecycleError(f"model '{settings.mlflow.model_name}' has no version {version}") from None


def _locked_move(
    settings: Settings,
    target_of: Callable[[ChampionState], str],
    *,
    kind: str,
    reason: str,
    user: str | None,
    extra: dict[str, Any] | None,
    if_champion_is: Any,
) -> dict[str, Any]:
    name = settings.mlflow.model_name
    with promotion_lock(settings):
        state = read_state(settings)  # read inside the lock: nobody moves between this and our write
        if if_champion_is is not ANY and state.alias != if_champion_is:
            raise ChampionMoved(
                f"@{CHAMPION} is {'v' + state.alias if state.alias else 'unset'} now, "
                f"not {'v' + if_champion_is if if_champion_is else 'unset'}: not moved"
            )
        target = target_of(state)
        _exists(settings, target)
        now_ms = int(time.time() * 1000)
        committed = state.committed()
        status = state.status(now_ms)
        stack = next_stack(list((committed or {}).get("stack") or []), target, rollback=kind == "rollback")
        seq = int((state.pointer or {}).get("seq", 0)) + 1
        move_id = uuid.uuid4().hex
        record = {
            "kind": kind,
            "from": state.alias,
            "to": target,
            "audited_from": (committed or {}).get("version"),
            "reason": reason,
            "user": user or getpass.getuser(),
            "host": socket.gethostname(),
            "at_ms": now_ms,
            "seq": seq,
            "move_id": move_id,
            **(extra or {}),
        }
        if status == "unaudited":
            record["unaudited_from"] = state.alias  # @champion had been moved around rtml
        key = audit_key(seq, move_id)
        tag_version(settings, target, {key: json.dumps(record, sort_keys=True)})
        if state.alias and state.alias != target:
            tag_version(
                settings, state.alias, {key: json.dumps({**record, "role": "replaced"}, sort_keys=True)}
            )
        pointer = {
            "version": target,
            "move_id": move_id,
            "seq": seq,
            "kind": kind,
            "at_ms": now_ms,
            "stack": stack,
        }
        before = {k: v for k, v in committed.items() if k != "before"} if committed else None
        _set_pointer(settings, {**pointer, "state": "moving", "before": before})
        c = client(settings)
        try:
            c.set_registered_model_alias(name, CHAMPION, target)
        except Exception:
            _set_pointer(settings, state.pointer)  # best effort: the pointer as it was; no record counts
            raise
        previous = stack[-2] if len(stack) >= 2 else None
        if previous is not None:
            c.set_registered_model_alias(name, PREVIOUS, previous)
        elif PREVIOUS in state.aliases:
            c.delete_registered_model_alias(name, PREVIOUS)
        _set_pointer(settings, {**pointer, "state": "done"})
    return {"ok": True, "champion": target, "previous_champion": previous, **record}


def move_champion(
    settings: Settings,
    version: str,
    *,
    kind: str,
    reason: str,
    user: str | None = None,
    extra: dict[str, Any] | None = None,
    if_champion_is: Any = ANY,
) -> dict[str, Any]:
    """Point @champion at version, under the promotion lock, with an audit record.

    ``if_champion_is``: move only if @champion is still that version (None: no champion yet).
    """
    target = normalise_version(version)
    return _locked_move(
        settings,
        lambda _state: target,
        kind=kind,
        reason=reason,
        user=user,
        extra=extra,
        if_champion_is=if_champion_is,
    )


def check_promotable(settings: Settings, spec: StreamSpec, version: str) -> None:
    """The version exists, loads from the configured registry, and its signature fits the spec."""
    import mlflow

    name = settings.mlflow.model_name
    _exists(settings, version)
    uri = f"models:/{name}/{version}"
    try:
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.tracking_uri)
        info = mlflow.models.get_model_info(uri)
        mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - any load failure blocks promotion
        raise LifecycleError(f"version {version} does not load: {str(exc).splitlines()[0][:200]}") from None
    if info.signature is None:
        raise LifecycleError(f"version {version} has no signature")
    got = set(info.signature.inputs.input_names())
    want = set(spec.model_inputs)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        raise LifecycleError(
            f"version {version} signature does not match spec '{spec.name}': "
            f"missing {missing}, unexpected {extra}"
        )


def promote_manual(
    settings: Settings, spec: StreamSpec, version: str, reason: str, user: str | None = None
) -> dict[str, Any]:
    """``rtml promote``: the version normalised (``02`` -> ``2``), checked, then moved to."""
    version = normalise_version(version)
    if not reason.strip():
        raise LifecycleError("a manual promotion needs --reason")
    check_promotable(settings, spec, version)
    return move_champion(settings, version, kind="manual", reason=reason, user=user)


def rollback(settings: Settings, reason: str = "rollback", user: str | None = None) -> dict[str, Any]:
    """Back one step in the audited champion history (v3 -> v2 -> v1), read inside the lock."""
    return _locked_move(
        settings,
        lambda state: rollback_target(state.committed()),
        kind="rollback",
        reason=reason,
        user=user,
        extra=None,
        if_champion_is=ANY,
    )


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Versions newest first, with aliases, key holdout metrics, last decision and audit count."""
    c = client(settings)
    name = settings.mlflow.model_name
    aliases: dict[str, list[str]] = {}
    try:
        for alias, v in c.get_registered_model(name).aliases.items():
            aliases.setdefault(str(v), []).append(alias)
    except Exception:  # noqa: BLE001 - no such model yet
        return []
    rows = []
    for mv in c.search_model_versions(f"name='{name}'", order_by=["version_number DESC"]):
        metrics = c.get_run(mv.run_id).data.metrics if mv.run_id else {}
        tags = mv.tags or {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "created_ms": mv.creation_timestamp,
                "trigger": tags.get("rtml.trigger"),
                "parent": tags.get("rtml.parent_version"),
                "precision": metrics.get("holdout_precision"),
                "recall": metrics.get("holdout_recall"),
                "f1": metrics.get("holdout_f1"),
                "decision": tags.get("rtml.decision"),
                "decision_reason": tags.get("rtml.decision_reason"),
                "comparison": _comparison(tags),
                "evidence": _evidence(tags),
                "lineage": _lineage(tags),
                "audit_records": sum(1 for k in tags if k.startswith(AUDIT_PREFIX)),
                "importance": {  # logged by models.monitoring.importance, largest first
                    k.removeprefix("importance."): v
                    for k, v in sorted(metrics.items(), key=lambda kv: -kv[1])
                    if k.startswith("importance.")
                },
            }
        )
    return rows


def _lineage(tags: dict[str, str]) -> dict[str, Any] | None:
    """The labelled table version (and window start) a retrained version was trained and judged on
    (None for versions not trained from the table, e.g. bootstrap or a batch file)."""
    if "rtml.labelled_table_version" not in tags:
        return None
    since = tags.get("rtml.labelled_since_ms")
    return {
        "table": "labelled",
        "labelled_table_version": int(tags["rtml.labelled_table_version"]),
        "since_ms": int(since) if since is not None else None,
    }


def _evidence(tags: dict[str, str]) -> dict[str, Any] | None:
    """What the version's decision was made on (``promotion.evidence``), its holdout verdict, and the
    newest live evidence judged on it as @shadow (None for versions never decided on).

    >>> _evidence({"rtml.decision_evidence": "shadow", "rtml.holdout_verdict": "promote"})
    {'mode': 'shadow', 'holdout_verdict': 'promote', 'live': None}
    """
    if "rtml.decision_evidence" not in tags and "rtml.decision_live" not in tags:
        return None
    try:
        live = json.loads(tags["rtml.decision_live"]) if "rtml.decision_live" in tags else None
    except ValueError:
        live = None
    return {
        "mode": tags.get("rtml.decision_evidence"),
        "holdout_verdict": tags.get("rtml.holdout_verdict"),
        "live": live,
    }


def _comparison(tags: dict[str, str]) -> dict[str, Any] | None:
    """This version against the champion it challenged, on the same holdout (from the decision tags):
    per metric both models' values, the delta, P(challenger better) and the interval."""
    if "rtml.decision_table" not in tags:
        return None
    try:
        rows = json.loads(tags["rtml.decision_table"])
    except ValueError:
        return None
    return {
        "champion_version": tags.get("rtml.compared_with"),
        "holdout": tags.get("rtml.decision_holdout"),
        "confidence": float(tags["rtml.decision_confidence"]) if "rtml.decision_confidence" in tags else None,
        "metrics": {r.pop("metric"): r for r in rows},
    }


def champion_audit(settings: Settings, moves: int = 10) -> dict[str, Any]:
    """Where @champion points, whether that move is audited, the rollback path and the last moves."""
    state = read_state(settings)
    committed = state.committed() or {}
    return {
        "alias": state.alias,
        "status": state.status(int(time.time() * 1000)),
        "audited_version": committed.get("version"),
        "move_id": committed.get("move_id"),
        "rollback_path": list(reversed(committed.get("stack") or []))[1:],
        "moves": history(settings, limit=moves) if state.aliases or state.pointer else [],
    }


def audit_trail(settings: Settings, version: str) -> list[dict[str, Any]]:
    """Every audit record on one version (moves to it, and copies of moves away from it), oldest first."""
    mv = client(settings).get_model_version(settings.mlflow.model_name, normalise_version(version))
    records = [(k, json.loads(v)) for k, v in (mv.tags or {}).items() if k.startswith(AUDIT_PREFIX)]
    return [r for _, r in sorted(records, key=lambda kr: (kr[1].get("seq", 0), kr[0]))]
