"""Registry actions: list versions, promote (auto or manual), roll back -- all by moving aliases.

Every promotion is recorded on the versions as tags (``rtml.audit.<time>`` with kind, from, to,
reason and user) before the aliases move, and promotions are serialised by a lock file under the
state dir, so racing promotions leave ``champion`` on one valid version with both recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.models.lifecycle.registry import CHAMPION, PREVIOUS, alias_version, client, tag_version


class LifecycleError(Exception):
    """A promotion/rollback request that cannot be carried out; one-line reason."""


@contextlib.contextmanager
def promotion_lock(settings: Settings) -> Iterator[None]:
    path = settings.state_dir / "locks" / "promotion.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def audit(settings: Settings, version: str, record: dict[str, Any]) -> None:
    stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"  # sorts in time order, unique under races
    tag_version(settings, version, {f"rtml.audit.{stamp}": json.dumps(record, sort_keys=True)})


def move_champion(
    settings: Settings,
    version: str,
    *,
    kind: str,
    reason: str,
    user: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Point @champion at version (the replaced one becomes @previous-champion), with an audit record."""
    user = user or getpass.getuser()
    with promotion_lock(settings):
        old = alias_version(settings, CHAMPION)
        record = {
            "kind": kind,
            "from": old,
            "to": version,
            "reason": reason,
            "user": user,
            "at_ms": int(time.time() * 1000),
            "seq": time.time_ns(),
            **(extra or {}),
        }
        audit(settings, version, record)
        if old and old != version:
            audit(settings, old, {**record, "role": "replaced"})
        c = client(settings)
        c.set_registered_model_alias(settings.mlflow.model_name, CHAMPION, version)
        if old and old != version:
            c.set_registered_model_alias(settings.mlflow.model_name, PREVIOUS, old)
    return {"ok": True, "champion": version, "previous_champion": old if old != version else None, **record}


def check_promotable(settings: Settings, spec: StreamSpec, version: str) -> None:
    """The version exists, loads from the configured registry, and its signature fits the spec."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = settings.mlflow.model_name
    try:
        client(settings).get_model_version(name, version)
    except MlflowException:
        raise LifecycleError(f"model '{name}' has no version {version}") from None
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
    if not reason.strip():
        raise LifecycleError("a manual promotion needs --reason")
    check_promotable(settings, spec, version)
    return move_champion(settings, version, kind="manual", reason=reason, user=user)


def rollback(settings: Settings, reason: str = "rollback", user: str | None = None) -> dict[str, Any]:
    target = alias_version(settings, PREVIOUS)
    if target is None:
        raise LifecycleError(f"no @{PREVIOUS} version to roll back to")
    return move_champion(settings, target, kind="rollback", reason=reason, user=user)


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
                "audit_records": sum(1 for k in tags if k.startswith("rtml.audit.")),
                "importance": {  # logged by models.monitoring.importance, largest first
                    k.removeprefix("importance."): v
                    for k, v in sorted(metrics.items(), key=lambda kv: -kv[1])
                    if k.startswith("importance.")
                },
            }
        )
    return rows


def audit_trail(settings: Settings, version: str) -> list[dict[str, Any]]:
    mv = client(settings).get_model_version(settings.mlflow.model_name, version)
    records = [(k, json.loads(v)) for k, v in (mv.tags or {}).items() if k.startswith("rtml.audit.")]
    return [r for _, r in sorted(records, key=lambda kr: (kr[1].get("seq", 0), kr[0]))]
