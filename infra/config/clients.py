"""Point MLflow and Prefect clients at the configured services (call from entry points only)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rtml.infra.config.settings import Settings


def configure_mlflow(settings: Settings) -> None:
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


@contextlib.contextmanager
def prefect_api(settings: Settings) -> Iterator[None]:
    """Run Prefect flows and clients inside against the configured Prefect API."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):
        yield
