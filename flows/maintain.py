"""Maintenance flow (``rtml-maintain``): compaction, retention and vacuum of the Delta tables.

One run at a time (a Prefect global concurrency limit ``rtml-maintain-<model>``). ``scores`` and
``quarantine`` (appended by the scoring job) are maintained under Delta's optimistic concurrency;
``labels`` and ``labelled`` under the labels flow's Prefect global concurrency limit too
(:func:`rtml.flows.labels.labels_lock`): one owner per store. The retention guard includes the
champion's training watermark (an incremental retrain reads every labelled event after it); when the
registry cannot be read, nothing is deleted this run (compaction and vacuum still run) and the
summary says why. See :mod:`rtml.pipelines.maintenance` for what is deleted and what never is.

    python -m rtml.flows.maintain          # one run against the configured services
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from rtml.infra.config.settings import Settings, load_settings
from rtml.infra.config.spec import StreamSpec, load_spec


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def champion_watermark(settings: Settings) -> int | None:
    """The served champion's training watermark (event-time ms); None: no champion yet."""
    from rtml.models.lifecycle.audit import served_champion
    from rtml.models.lifecycle.registry import client
    from rtml.models.training.retrain import WATERMARK_TAG

    served = served_champion(settings)
    version = served.version or served.alias
    if version is None:
        return None
    mv = client(settings).get_model_version(settings.mlflow.model_name, version)
    return int((mv.tags or {}).get(WATERMARK_TAG, "0"))


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def maintain_tables(
    settings: Settings,
    spec: StreamSpec,
    now_ms: int,
    tables: tuple[str, ...],
    watermark_ms: int | None,
    dry_run: bool,
) -> dict[str, Any]:
    """One guard, then each table (every step re-plans from the current snapshot: a retry is safe)."""
    from rtml.pipelines.maintenance import maintain

    return maintain(settings, spec, now_ms, tables, watermark_ms, dry_run)


def run_maintenance(
    settings: Settings, spec: StreamSpec, now_ms: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """The flow's body, one run at a time (its own lock: two runs compacting the same table would
    conflict): the tables appended by the scoring job first, then the labels flow's tables under
    that flow's lock too."""
    from rtml.flows.labels import flow_lock, labels_lock

    with flow_lock(settings, "maintain"):
        return _run_locked(settings, spec, now_ms, dry_run, labels_lock)


def _run_locked(
    settings: Settings, spec: StreamSpec, now_ms: int | None, dry_run: bool, labels_lock: Any
) -> dict[str, Any]:
    from rtml.pipelines.maintenance import LOCKED, TABLES

    now = int(now_ms if now_ms is not None else time.time() * 1000)
    warnings: list[str] = []
    try:
        watermark = champion_watermark(settings)
    except Exception as exc:  # noqa: BLE001 - keep everything rather than guess the retrain's window
        watermark = 0
        warnings.append(f"champion watermark unknown, nothing deleted: {type(exc).__name__}: {exc}")
    free = tuple(t for t in TABLES if t not in LOCKED)
    first = maintain_tables(settings, spec, now, free, watermark, dry_run)
    with labels_lock(settings):
        second = maintain_tables(settings, spec, now, LOCKED, watermark, dry_run)
    return {
        "now_ms": now,
        "dry_run": dry_run,
        "guard": second["guard"],
        "tables": first["tables"] + second["tables"],
        "warnings": warnings + first["warnings"] + second["warnings"],
    }


@flow(name="rtml-maintain", log_prints=True)
def maintain_flow(
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    now_ms: int | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """One maintenance run; returns per-table counts (JSON-able)."""
    from pathlib import Path

    settings = load_settings(Path(config_file) if config_file else None, overrides)
    summary = run_maintenance(settings, load_spec(settings.spec), now_ms, dry_run)
    logger = get_run_logger()
    for w in summary["warnings"]:
        logger.warning(w)
    logger.info(f"maintain: {summary}")
    return summary


if __name__ == "__main__":
    print(maintain_flow())
