"""`rtml demo`: the whole loop on the embedded local stack, ending with a summary."""

from __future__ import annotations

from typing import Any

from infra import stack
from infra.settings import Settings
from infra.smoke import run_smoke


def run_demo(settings: Settings, progress: bool = True) -> dict[str, Any]:
    up = stack.up(settings)
    smoke = run_smoke(settings)
    return {
        "ok": smoke["ok"],
        "stack": up,
        "smoke": smoke,
        "tables": {
            "smoke round trip": {k: "ok" if v["ok"] else v["detail"] for k, v in smoke["checks"].items()}
        },
        "urls": {
            "mlflow": settings.tracking_uri,
            "prefect": settings.prefect_api_url.removesuffix("/api"),
            "kafka": settings.kafka_bootstrap,
        },
    }
