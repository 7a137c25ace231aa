"""Alert routing in Prefect: the notification block and the automation that sends rtml alerts to it.

rtml emits every finding as a Prefect event (:mod:`rtml.models.monitoring.alerts`); an automation reacts to
``rtml.drift.*``, ``rtml.quality.*`` and ``rtml.champion.*`` events of this model at or above
``alerts.min_severity`` and sends each through the notification block named
``alerts.notification_block`` (Slack, PagerDuty, email, or a generic webhook). With
``alerts.webhook_url`` set, :func:`ensure_alerting` creates that block as a generic webhook that
POSTs ``{"subject": ..., "body": "<JSON of the alert>"}``; the URL is kept as a block secret.
Idempotent: running it again updates the block and the automation in place.
"""

from __future__ import annotations

from typing import Any

from rtml.models.monitoring.alerts import SEVERITIES
from rtml.models.monitoring.routing import AUTOMATION_PREFIX
from rtml.models.monitoring.routing import automation_name as _automation_name

__all__ = ["AUTOMATION_PREFIX", "AlertingError", "automation_name", "ensure_alerting"]
# Rendered by the Prefect server for each event (Jinja): the alert as one JSON document.
BODY = (
    '{"event": "{{ event.event }}", "id": "{{ event.id }}", "occurred": "{{ event.occurred }}", '
    '"resource": {{ event.resource.root | tojson }}, "payload": {{ event.payload | tojson }}}'
)
SUBJECT = (
    "[rtml {{ event.payload.severity }}] {{ event.event }} on {{ event.resource.root['rtml.model.name'] }}"
    " v{{ event.resource.root['rtml.model.version'] }}"
    "{% if event.payload.feature %} ({{ event.payload.feature }}){% endif %}"
)


class AlertingError(Exception):
    """The alert route cannot be set up; one-line reason."""


def automation_name(settings: Any) -> str:
    return _automation_name(settings.mlflow.model_name)


def notification_block_id(settings: Any) -> Any:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    name = settings.alerts.notification_block
    url = settings.alerts.webhook_url
    if url is not None:
        block = CustomWebhookNotificationBlock(
            name=name,
            url="{{rtml_webhook_url}}",
            json_data={"subject": "{{subject}}", "body": "{{body}}"},
            secrets={"rtml_webhook_url": url.get_secret_value()},
        )
        block.save(name, overwrite=True)
        return block._block_document_id
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # any notification block (Slack, PagerDuty, email ...)
        for doc in client.read_block_documents():
            caps = doc.block_schema.capabilities if doc.block_schema else []
            if doc.name == name and "notify" in caps:
                return doc.id
    raise AlertingError(
        f"no Prefect notification block named '{name}': create one in the Prefect UI "
        "(Slack, PagerDuty, email, webhook) or set alerts.webhook_url"
    )


def ensure_alerting(settings: Any) -> dict[str, Any]:
    """Create or update the notification block (from a webhook URL) and the alert automation."""
    from prefect.automations import Automation, EventTrigger, SendNotification
    from prefect.events.schemas.automations import Posture

    block_id = notification_block_id(settings)
    wanted = SEVERITIES[SEVERITIES.index(settings.alerts.min_severity) :]
    model = settings.mlflow.model_name
    automation = Automation(
        name=automation_name(settings),
        description=f"rtml: page on drift and data-quality alerts of model {model}",
        trigger=EventTrigger(
            expect={"rtml.drift.*", "rtml.quality.*", "rtml.champion.*"},
            match={"rtml.model.name": model, "rtml.alert.severity": wanted},
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )
    try:
        existing = Automation.read(name=automation.name)
    except ValueError:
        existing = None
    if existing is None:
        created = automation.create()
        action = "created"
    else:
        automation.id = existing.id
        automation.update()
        created, action = automation, "updated"
    return {
        "automation": automation.name,
        "automation_id": str(created.id),
        "action": action,
        "notification_block": settings.alerts.notification_block,
        "severities": list(wanted),
    }
