"""Alerts: a Prefect event (what automations and notification blocks act on) plus a copy on the
alerts topic for consumers outside Prefect. Payloads carry no secrets: settings never enter them.

Event names: ``rtml.quality.failed``, ``rtml.drift.<kind>``, ``rtml.champion.unaudited``. The resource is
the model version.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

log = logging.getLogger(__name__)
SEVERITIES = ("info", "warning", "critical")


def model_resource(model_name: str, version: str | None) -> dict[str, str]:
    return {
        "prefect.resource.id": f"rtml.model.{model_name}.v{version}"
        if version
        else f"rtml.model.{model_name}",
        "prefect.resource.name": model_name,
        "rtml.model.name": model_name,
        "rtml.model.version": str(version or ""),
    }


def emit_alert(
    settings: Any, event: str, version: str | None, payload: dict[str, Any], severity: str = "warning"
) -> dict[str, Any]:
    """Emit one alert; returns the alert as sent. Kafka delivery is best effort (logged on failure)."""
    from prefect.events import emit_event

    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}")
    body = {**payload, "severity": severity, "emitted_at_ms": int(time.time() * 1000)}
    resource = {**model_resource(settings.mlflow.model_name, version), "rtml.alert.severity": severity}
    sent = emit_event(event=event, resource=resource, payload=body)
    alert = {
        "event": event,
        "resource": resource,
        "payload": body,
        "prefect_event_id": str(sent.id) if sent else None,
    }
    try:
        from rtml.infra.config.kafka_clients import connection_options, make_producer

        producer = make_producer(connection_options(settings))
        try:
            producer.send(settings.kafka.topics.alerts, json.dumps(alert, default=str).encode()).get(
                timeout=10
            )
        finally:
            producer.close(timeout=5)
    except Exception as exc:  # noqa: BLE001 - the Prefect event is the alert of record
        log.warning("alert %s not copied to Kafka: %s", event, type(exc).__name__)
    return alert


LEDGER_TAG = "rtml.alerted."


def emit_once(
    settings: Any,
    version: str,
    key: str,
    event: str,
    payload: dict[str, Any],
    severity: str,
    cooldown_s: float,
    now_ms: int | None = None,
) -> dict[str, Any] | None:
    """Emit unless the same (model version, key) alerted within the cooldown; None when suppressed.

    The ledger is a tag per key on the registered model version (``rtml.alerted.<key>`` = epoch ms),
    shared by every process that talks to the registry and visible in the MLflow UI.
    """
    from rtml.models.lifecycle.registry import client, tag_version

    now_ms = now_ms or int(time.time() * 1000)
    tags = client(settings).get_model_version(settings.mlflow.model_name, version).tags or {}
    last = int(tags.get(LEDGER_TAG + key, "0") or 0)
    if now_ms - last < cooldown_s * 1000:
        return None
    tag_version(settings, version, {LEDGER_TAG + key: str(now_ms)})
    return emit_alert(settings, event, version, payload, severity)
