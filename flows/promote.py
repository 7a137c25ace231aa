"""Promote deployment: run by hand with a version and a reason (bypasses the metric gate).

Checks that the version exists, loads from the registry and fits the spec, then moves
``@champion`` (the old one becomes ``@previous-champion``), under the promotion lock and with an audit
record (:mod:`rtml.models.lifecycle.aliases`); the version may be given as ``02`` or ``v2``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from rtml.infra.config.settings import load_settings


@flow(name="rtml-promote", log_prints=True)
def promote_flow(
    version: str, reason: str, config_file: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    from pathlib import Path

    from rtml.infra.config.spec import load_spec
    from rtml.models.lifecycle.aliases import promote_manual

    settings = load_settings(Path(config_file) if config_file else None, overrides)
    return promote_manual(settings, load_spec(settings.spec), str(version), reason)
