"""``@shadow``: a version the scoring job scores beside the champion, in the same pass, without acting
on its decisions (``rtml shadow VERSION``). Setting or clearing it checks the version like a
promotion does (it exists, loads from the configured registry, fits the spec) and leaves a record
on the version (tag ``rtml.shadow.<ms>``: on/off, user, reason), so no alias move goes unaudited.
"""

from __future__ import annotations

import getpass
import json
import time
from typing import Any

from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.models.lifecycle.aliases import check_promotable
from rtml.models.lifecycle.audit import LifecycleError, normalise_version, read_state
from rtml.models.lifecycle.registry import CHAMPION, SHADOW, client, tag_version

SHADOW_RECORD = "rtml.shadow."


def shadowed_at_ms(tags: dict[str, str]) -> int | None:
    """When the version was last made ``@shadow``, from its audit records (its MLflow tags)."""
    records = [json.loads(v) for k, v in tags.items() if k.startswith(SHADOW_RECORD)]
    on = [r.get("at_ms", 0) for r in records if r.get("action") == "on"]
    return max(on) if on else None


def _record(settings: Settings, version: str, action: str, reason: str, user: str | None) -> dict[str, Any]:
    at = int(time.time() * 1000)
    record = {"action": action, "user": user or getpass.getuser(), "reason": reason, "at_ms": at}
    tag_version(settings, version, {f"{SHADOW_RECORD}{at}": json.dumps(record)})
    return record


def set_shadow(
    settings: Settings, spec: StreamSpec, version: str, reason: str, user: str | None = None
) -> dict[str, Any]:
    """Point ``@shadow`` at ``version`` (checked like a promotion); the previous shadow, if any, is
    recorded as replaced."""
    version = normalise_version(version)
    if not reason.strip():
        raise LifecycleError("rtml shadow needs --reason")
    state = read_state(settings)
    if state.aliases.get(CHAMPION) == version:
        raise LifecycleError(f"version {version} is the champion: shadow another version")
    check_promotable(settings, spec, version)
    before = state.aliases.get(SHADOW)
    if before and before != version:
        _record(settings, before, "replaced", f"replaced by v{version}: {reason}", user)
    client(settings).set_registered_model_alias(settings.mlflow.model_name, SHADOW, version)
    record = _record(settings, version, "on", reason, user)
    return {"shadow": version, "previous_shadow": before, **record}


def clear_shadow(settings: Settings, reason: str, user: str | None = None) -> dict[str, Any]:
    """Remove ``@shadow`` (a no-op, said so, when there is none)."""
    if not reason.strip():
        raise LifecycleError("rtml shadow --off needs --reason")
    before = read_state(settings).aliases.get(SHADOW)
    if before is None:
        return {"shadow": None, "previous_shadow": None, "changed": False}
    client(settings).delete_registered_model_alias(settings.mlflow.model_name, SHADOW)
    record = _record(settings, before, "off", reason, user)
    return {"shadow": None, "previous_shadow": before, "changed": True, **record}
