"""Labels flow (``rtml-labels``): the only writer of the labelled table.

Ingests the labels topic into the ``labels`` table, then refreshes the ``labelled`` table
incrementally (:mod:`rtml.pipelines.labelled`). Runs are serialised across machines by a Prefect
global concurrency limit of one slot (``rtml-labels-<model>``); retrain and drift only read the
labelled table. Its summary: new labels, new scored events, labelled, expired (as negative),
pending, labels waiting for their event.

    python -m rtml.flows.labels            # one run against the configured services
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from rtml.infra.config.settings import Settings, load_settings
from rtml.infra.config.spec import StreamSpec, load_spec

LOCK_TIMEOUT_S = 600.0


def lock_name(model_name: str, kind: str = "labels") -> str:
    """>>> lock_name("rtml-fraud"), lock_name("rtml-fraud", "maintain")
    ('rtml-labels-rtml-fraud', 'rtml-maintain-rtml-fraud')
    """
    from rtml.models.lifecycle.lock import lock_name as promotion_name

    return promotion_name(model_name).replace("rtml-promotion-", f"rtml-{kind}-", 1)


@contextlib.contextmanager
def flow_lock(settings: Settings, kind: str) -> Iterator[None]:
    """One holder of a per-model Prefect global concurrency limit at a time, on every machine that
    shares the Prefect API (``labels``: the labelled table's writer; ``maintain``: table maintenance)."""
    from prefect.concurrency.sync import concurrency

    from rtml.models.lifecycle.lock import LEASE_S, ensure_limit

    name = lock_name(settings.mlflow.model_name, kind)
    ensure_limit(name)
    with concurrency(name, occupy=1, timeout_seconds=LOCK_TIMEOUT_S, lease_duration=LEASE_S, strict=True):
        yield


def labels_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """One labelled-table writer at a time (:func:`flow_lock` ``labels``)."""
    return flow_lock(settings, "labels")


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def ingest(settings: Settings, spec: StreamSpec) -> dict[str, int]:
    from rtml.pipelines.labels import ingest_labels

    return ingest_labels(settings, spec)


@task(cache_policy=NO_CACHE)
def refresh(settings: Settings, spec: StreamSpec, now_ms: int | None) -> dict[str, int]:
    from rtml.pipelines.labelled import refresh_labelled

    return refresh_labelled(settings, spec, now_ms)


def run_labels(settings: Settings, spec: StreamSpec, now_ms: int | None = None) -> dict[str, Any]:
    """Ingest + refresh under the labels lock (the flow's body; also called by the retrain flow)."""
    if spec.label is None:
        return {"skipped": f"spec '{spec.name}' declares no label"}
    with labels_lock(settings):
        ingested = ingest(settings, spec)
        refreshed = refresh(settings, spec, now_ms)
    return {**ingested, **refreshed, "new_labels": ingested.get("new_labels", 0)}


@flow(name="rtml-labels", log_prints=True)
def labels_flow(
    config_file: str | None = None, overrides: dict[str, Any] | None = None, now_ms: int | None = None
) -> dict[str, Any]:
    """One incremental labels run; returns its counts (JSON-able)."""
    from pathlib import Path

    settings = load_settings(Path(config_file) if config_file else None, overrides)
    summary = run_labels(settings, load_spec(settings.spec), now_ms)
    get_run_logger().info(f"labels: {summary}")
    return summary


if __name__ == "__main__":
    print(labels_flow())
