"""Alerts: a Prefect event (what automations and notification blocks act on) plus a copy on the
alerts topic for consumers outside Prefect. Payloads carry no secrets: settings never enter them.

Event names: ``rtml.quality.failed``, ``rtml.drift.<kind>``, ``rtml.champion.unaudited``. The resource is
the model version. Emitting is not paging: :func:`page` sends only through a resolved on-call route and
reports a page as ``sent`` only when the Prefect server recorded the notification
(:mod:`rtml.models.monitoring.routing`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
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


@dataclass
class Page:
    """One alert to send: the ledger ``key`` (cooldown per model version and key), event and payload."""

    key: str
    event: str
    payload: dict[str, Any]
    severity: str


def page(
    settings: Any,
    version: str,
    pages: list[Page],
    cooldown_s: float,
    timeout_s: float,
    now_ms: int | None = None,
) -> tuple[dict[str, str], Any]:
    """Send each page unless its (model version, key) was paged within the cooldown.

    Returns key -> status (``sent``, ``cooldown``, ``not routed: <why>``, ``not sent: <why>``) and the
    route. ``sent`` means the Prefect server recorded the notification as executed. The ledger is a tag
    per key on the registered model version (``rtml.alerted.<key>`` = epoch ms), shared by every
    process that talks to the registry: it is claimed before the send (so two processes do not both
    page) and given back when the page did not go out, so the next check tries again. An alert
    without a route is still emitted (Prefect event feed, alerts topic) but marked ``not routed``.
    """
    from rtml.models.lifecycle.registry import client, tag_version
    from rtml.models.monitoring.routing import confirm_delivery, resolve_route

    now_ms = now_ms or int(time.time() * 1000)
    route = resolve_route(settings)
    status: dict[str, str] = {}
    claimed: dict[str, tuple[str, str | None]] = {}  # prefect event id -> (key, previous ledger value)
    tags = client(settings).get_model_version(settings.mlflow.model_name, version).tags or {}
    for p in pages:
        last = tags.get(LEDGER_TAG + p.key)
        if now_ms - int(last or 0) < cooldown_s * 1000:
            status[p.key] = "cooldown"
            continue
        why = route.why_not(p.event, p.severity)
        if why is None:
            tag_version(settings, version, {LEDGER_TAG + p.key: str(now_ms)})
        alert = emit_alert(settings, p.event, version, p.payload, p.severity)
        if why is not None:
            status[p.key] = f"not routed: {why}"
        elif alert["prefect_event_id"] is None:
            status[p.key] = "not sent: the Prefect event could not be emitted (no Prefect API?)"
            _give_back(settings, version, p.key, last)
        else:
            claimed[alert["prefect_event_id"]] = (p.key, last)
    try:
        delivered = confirm_delivery(route, list(claimed), timeout_s) if claimed else {}
    except Exception as exc:  # noqa: BLE001 - unknown is not sent: give the claims back, page again next time
        why = f"not sent: Prefect's record could not be read ({type(exc).__name__})"
        delivered = dict.fromkeys(claimed, why)
    for event_id, (key, last) in claimed.items():
        status[key] = delivered[event_id]
        if status[key] != "sent":
            _give_back(settings, version, key, last)
    for key, s in status.items():
        if s.startswith("not "):
            log.warning("alert %s of v%s %s", key, version, s)
    return status, route


def _give_back(settings: Any, version: str, key: str, previous: str | None) -> None:
    """Undo a ledger claim: the page did not go out, so the cooldown must not hold it back."""
    from rtml.models.lifecycle.registry import client, tag_version

    if previous is not None:
        tag_version(settings, version, {LEDGER_TAG + key: previous})
    else:
        client(settings).delete_model_version_tag(settings.mlflow.model_name, version, LEDGER_TAG + key)
