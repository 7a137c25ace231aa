"""Quality deployment: validate what the scoring job saw and wrote over the last window.

Runs the ``raw_events`` suite over the scored events and the ``scores`` suite over their scores;
each result is stored in MLflow (validation JSON + Data Docs) and a Prefect artifact, and a failure
raises a ``rtml.quality.failed`` alert (warning) and fails the flow run, naming the expectations in
one line (no traceback: :mod:`rtml.flows.failures`).

    python -m rtml.flows.quality
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from rtml.infra.config.settings import Settings, load_settings
from rtml.infra.config.spec import StreamSpec, load_spec, parse_duration_seconds


class QualityCheckFailed(RuntimeError):
    """A suite failed on the recent window; the message names the failed expectations."""

    one_line = True  # an outcome, not a bug: the run fails with this message, no traceback


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def validate_suite(settings: Settings, spec: StreamSpec, suite: str, frame: Any, version: str | None) -> dict:
    from rtml.expectations.gate import publish, validate

    result = publish(validate(frame, suite, spec, settings), settings, {"rtml.gate": "scheduled"})
    if not result.passed:
        from rtml.models.monitoring.alerts import emit_alert

        emit_alert(
            settings,
            "rtml.quality.failed",
            version,
            {
                "kind": "quality",
                "suite": suite,
                "gate": "scheduled",
                "failed": result.failed_names(),
                "rows": result.rows,
                "mlflow_run_id": result.mlflow_run_id,
            },
            severity="warning",
        )
    return result.summary()


@flow(name="rtml-quality", log_prints=True)
def quality_flow(
    config_file: str | None = None, overrides: dict[str, Any] | None = None, window: str | None = None
) -> dict[str, Any]:
    from pathlib import Path

    from rtml.expectations.stream import raw_events_frame
    from rtml.flows.failures import one_line_failures
    from rtml.models.lifecycle.registry import CHAMPION, alias_version
    from rtml.pipelines.sinks import read_sink

    one_line_failures()
    settings = load_settings(Path(config_file) if config_file else None, overrides)
    spec = load_spec(settings.spec)
    window = window or settings.quality.window
    since = int(time.time() * 1000) - parse_duration_seconds(window) * 1000
    scores = read_sink(settings, "scores", since)
    out: dict[str, Any] = {"window": window, "rows": int(len(scores)), "suites": {}}
    if scores.empty:
        out["verdict"] = "no data"
        return out
    version = alias_version(settings, CHAMPION)
    out["suites"]["raw_events"] = validate_suite(
        settings, spec, "raw_events", raw_events_frame(scores, spec), version
    )
    out["suites"]["scores"] = validate_suite(settings, spec, "scores", scores, version)
    failed = {k: v["failed"] for k, v in out["suites"].items() if not v["passed"]}
    out["verdict"] = "failed" if failed else "passed"
    if failed:
        raise QualityCheckFailed(
            "; ".join(f"{suite}: {', '.join(f)}" for suite, f in failed.items()) + f" (last {window})"
        )
    return out


if __name__ == "__main__":
    print(quality_flow())
