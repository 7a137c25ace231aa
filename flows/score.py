"""Scoring deployment: a long-running flow that keeps the streaming scoring job alive.

The work is in :class:`rtml.pipelines.supervisor.ScoringSupervisor`; this flow publishes what it sees:
a ``rtml.scoring.heartbeat`` event every heartbeat (input and processed rates, batch duration,
consumer lag, restarts), a ``rtml.scoring.restarted`` event per restart, and the
``rtml-scoring-progress`` table artifact. Cancel the flow run (or SIGTERM) to stop the job cleanly.

    python -m rtml.flows.score            # supervise until stopped
"""

from __future__ import annotations

import threading
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from rtml.infra.config.settings import load_settings

ARTIFACT_EVERY = 6  # heartbeats between two progress artifacts


def _resource(model_name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"rtml.scoring.{model_name}", "rtml.model.name": model_name}


@flow(name="rtml-score", log_prints=True)
def score_flow(
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_seconds: float | None = None,
    heartbeat_s: float = 10.0,
    max_restarts: int = 5,
) -> dict[str, Any]:
    """Run and supervise the scoring job; returns starts, restarts, exit codes and last progress."""
    import signal
    from pathlib import Path

    from prefect.events import emit_event

    from rtml.pipelines.supervisor import ScoringSupervisor

    settings = load_settings(Path(config_file) if config_file else None, overrides)
    logger = get_run_logger()
    resource = _resource(settings.mlflow.model_name)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def on_heartbeat(beat: dict[str, Any]) -> None:
        emit_event(event="rtml.scoring.heartbeat", resource=resource, payload=beat)
        if supervisor.report.heartbeats % ARTIFACT_EVERY == 1:
            create_table_artifact(
                key="rtml-scoring-progress", table=[beat], description="scoring job: latest heartbeat"
            )

    def on_restart(event: dict[str, Any]) -> None:
        logger.warning(f"scoring job exited ({event['exit_code']}); restarting in {event['restart_in_s']}s")
        emit_event(event="rtml.scoring.restarted", resource=resource, payload=event)

    supervisor = ScoringSupervisor(
        settings, overrides, config_file, heartbeat_s=heartbeat_s, max_restarts=max_restarts
    )
    report = supervisor.run(stop, run_seconds, on_heartbeat, on_restart)
    return report.as_dict()


if __name__ == "__main__":
    print(score_flow())
