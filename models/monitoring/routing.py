"""Is anyone paged? The on-call route of a model's alerts, and the proof that a page went out.

An alert reaches on-call through the Prefect automation ``rtml-alerts-<model>`` (created by
``rtml alerting``), whose send-notification action posts it through a notification block. Emitting
the event proves nothing: without the automation, or with its block deleted, nobody is paged. So a
sender first resolves the route (:func:`resolve_route`: automation present and enabled, a
send-notification action whose block still exists, the alert's event and severity matched by its
trigger) and, after emitting, waits for the Prefect server's own record of the action
(:func:`confirm_delivery`: ``prefect.automation.action.executed`` or ``...action.failed``, related to
the alert's event as its ``triggering-event``).

>>> r = Route(automation="rtml-alerts-m", automation_id="a1", severities=("warning", "critical"),
...           expect=("rtml.drift.*",))
>>> r.why_not("rtml.drift.feature", "critical") is None
True
>>> r.why_not("rtml.drift.feature", "info")
"severity 'info' is not paged by automation 'rtml-alerts-m' (it sends warning, critical)"
>>> Route(automation="rtml-alerts-m", why="no Prefect automation").why_not("rtml.drift.feature", "critical")
'no Prefect automation'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

AUTOMATION_PREFIX = "rtml-alerts-"
EXECUTED = "prefect.automation.action.executed"
FAILED = "prefect.automation.action.failed"


def automation_name(model_name: str) -> str:
    """The alert automation of one registered model."""
    return f"{AUTOMATION_PREFIX}{model_name}"


@dataclass(frozen=True)
class Route:
    """What the Prefect server will do with this model's alerts; ``why`` says why nothing, if so."""

    automation: str
    automation_id: str | None = None
    severities: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()
    block: str | None = None
    why: str | None = None

    @property
    def ok(self) -> bool:
        return self.why is None

    def why_not(self, event: str, severity: str) -> str | None:
        """None when an alert of this event and severity is sent, else the reason it is not."""
        if self.why is not None:
            return self.why
        if self.expect and not any(fnmatchcase(event, pattern) for pattern in self.expect):
            return f"event '{event}' is not matched by automation '{self.automation}'"
        if self.severities and severity not in self.severities:
            return (
                f"severity '{severity}' is not paged by automation '{self.automation}' "
                f"(it sends {', '.join(self.severities)})"
            )
        return None


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def resolve_route(settings: Any) -> Route:
    """The route of ``settings.mlflow.model_name``'s alerts as the Prefect server has it now."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = automation_name(settings.mlflow.model_name)
    with get_client(sync_client=True) as client:
        found = [a for a in client.read_automations_by_name(name) if a.name == name]
        if not found:
            return Route(name, why=f"no Prefect automation '{name}' (run `rtml alerting`)")
        automation = found[0]
        route = Route(name, automation_id=str(automation.id))
        if not automation.enabled:
            return Route(name, str(automation.id), why=f"automation '{name}' is disabled")
        sends = [a for a in automation.actions if getattr(a, "type", None) == "send-notification"]
        if not sends:
            why = f"automation '{name}' has no send-notification action"
            return Route(name, route.automation_id, why=why)
        block_id = sends[0].block_document_id
        try:
            block = client.read_block_document(block_id)
        except ObjectNotFound:
            return Route(
                name,
                route.automation_id,
                why=f"the notification block of automation '{name}' no longer exists (run `rtml alerting`)",
            )
        caps = block.block_schema.capabilities if block.block_schema else []
        if "notify" not in caps:
            return Route(name, route.automation_id, why=f"block '{block.name}' is not a notification block")
        trigger = automation.trigger
        match = getattr(trigger, "match", None)  # a ResourceSpecification: label -> value(s)
        label = match.get if match is not None else (lambda _key: None)
        model = _as_tuple(label("rtml.model.name"))
        if model and settings.mlflow.model_name not in model:
            return Route(name, route.automation_id, why=f"automation '{name}' matches another model")
        return Route(
            name,
            route.automation_id,
            severities=_as_tuple(label("rtml.alert.severity")),
            expect=tuple(sorted(_as_tuple(getattr(trigger, "expect", None)))),
            block=block.name,
        )


def _triggering_event(event: Any) -> str | None:
    for related in event.related:
        if related.get("prefect.resource.role") == "triggering-event":
            return related.id.removeprefix("prefect.event.")
    return None


def confirm_delivery(
    route: Route, event_ids: list[str], timeout_s: float, poll_s: float = 1.0
) -> dict[str, str]:
    """Wait for the automation's record of each alert: event id -> ``sent`` or ``not sent: <why>``.

    ``sent`` only when the server recorded ``prefect.automation.action.executed`` for that event (the
    notification block's send returned without error). A failed action gives its reason; no record
    within ``timeout_s`` (the server dropped it, or the event never reached it) is not sent either.
    """
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventRelatedFilter,
        EventResourceFilter,
    )

    out: dict[str, str] = {}
    pending = [e for e in event_ids if e]
    since, ahead = datetime.now(UTC) - timedelta(minutes=10), timedelta(minutes=1)
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while pending:
            for start in range(0, len(pending), 20):  # the API returns at most 50 events a page
                chunk = pending[start : start + 20]
                page = client.read_events(
                    EventFilter(
                        occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + ahead),
                        event=EventNameFilter(name=[EXECUTED, FAILED]),
                        resource=EventResourceFilter(id=[f"prefect.automation.{route.automation_id}"]),
                        related=EventRelatedFilter(id=[f"prefect.event.{e}" for e in chunk]),
                    ),
                    limit=50,
                )
                for event in page.events:
                    eid = _triggering_event(event)
                    if eid not in chunk or eid in out:
                        continue
                    if event.event == EXECUTED:
                        out[eid] = "sent"
                    else:
                        out[eid] = f"not sent: {event.payload.get('reason') or 'the notification failed'}"
            pending = [e for e in pending if e not in out]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    for eid in pending:
        out[eid] = f"not sent: Prefect recorded no notification within {timeout_s:g}s"
    return out
