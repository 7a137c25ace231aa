"""Stream gate: the scoring job validates every K-th micro-batch with the raw-events suite.

Row-level problems (bad JSON, wrong types, out-of-range values ...) are already caught per event
and quarantined by ``rtml.pipelines.validation``; this gate checks what only a batch can show --
duplicated event ids, null rates, category mixes, and whatever was added to the suite by hand.
It runs in a background thread on the driver, so it never holds up scoring. Each check leaves
``<sink_root>/_quality/batch_id=N.json`` (pass/fail, failed expectations); a failure also stores
GE's result and Data Docs in MLflow and raises a ``rtml.quality.failed`` alert (severity warning).

>>> import pandas as pd
>>> from rtml.infra.config.spec import load_spec
>>> sink = pd.DataFrame({"transaction_id": ["t1"], "event_time": ["2026-01-01T00:00:00Z"],
...     "card_id": ["c"], "_event_ms": [0], "amount": [1.0], "distance_from_home_km": [2.0],
...     "merchant_category": ["fuel"], "channel": ["pos"], "card_present": [1.0], "score": [0.1]})
>>> raw = raw_events_frame(sink, load_spec())
>>> list(raw.columns)[-2:], raw["card_present"].tolist()
(['card_present', '_event_ms'], [True])
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.files import replace_file
from rtml.infra.config.spec import StreamSpec

log = logging.getLogger(__name__)
QUALITY_DIR = "_quality"


def raw_events_frame(scored: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    """The event fields of scored rows as they arrived (booleans back from the model's 0/1)."""
    from rtml.expectations.gate import prepare

    return prepare(scored[[*spec.event_fields, EVENT_MS]], spec)


class StreamGate:
    """Validates every ``quality.stream_every_batches``-th micro-batch off the scoring path."""

    def __init__(self, settings: Any, spec: StreamSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.every = settings.quality.stream_every_batches
        self.root: Path = settings.sink_root / QUALITY_DIR
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtml-stream-gate")
        self._pending: list[Future] = []
        if self.every > 0:  # build GE's context (~6 s) while the job starts, not on a live micro-batch
            from rtml.expectations.gate import warm_up

            self._pending.append(self._pool.submit(warm_up))

    def due(self, batch_id: int) -> bool:
        return self.every > 0 and batch_id % self.every == 0

    def submit(self, batch_id: int, scored: Any, version: str) -> None:
        """Queue a check of this batch (an Arrow table of scored rows) if it is one of the sample."""
        if not self.due(batch_id) or scored.num_rows == 0:
            return
        self._pending = [f for f in self._pending if not f.done()]
        if len(self._pending) >= 2:  # checks are falling behind: skip rather than queue up memory
            log.warning("stream gate busy: batch %s not validated", batch_id)
            return
        frame = raw_events_frame(scored.to_pandas(), self.spec)
        self._pending.append(self._pool.submit(self._check, batch_id, frame, version))

    def _check(self, batch_id: int, frame: pd.DataFrame, version: str) -> dict[str, Any]:
        from rtml.expectations.gate import validate

        try:
            result = validate(frame, "raw_events", self.spec, self.settings, render=False)
        except Exception as exc:  # noqa: BLE001 - a broken check is recorded, never stops scoring
            record = {"batch_id": batch_id, "passed": None, "error": f"{type(exc).__name__}: {exc}"[:500]}
            self._write(batch_id, record)
            return record
        record = {"batch_id": batch_id, "model_version": version, **result.summary()}
        if not result.passed:
            record.update(self._report_failure(batch_id, frame, version))
        self._write(batch_id, record)
        return record

    def _report_failure(self, batch_id: int, frame: pd.DataFrame, version: str) -> dict[str, Any]:
        from rtml.expectations.gate import publish, validate
        from rtml.infra.config.clients import prefect_api
        from rtml.models.monitoring.alerts import emit_alert

        out: dict[str, Any] = {}
        try:  # re-run with rendering only for failures: Data Docs for whoever is on call
            full = validate(frame, "raw_events", self.spec, self.settings, render=True)
            out["mlflow_run_id"] = publish(
                full, self.settings, {"rtml.gate": "stream", "rtml.batch_id": str(batch_id)}
            ).mlflow_run_id
            with prefect_api(self.settings):
                emit_alert(
                    self.settings,
                    "rtml.quality.failed",
                    version,
                    {
                        "kind": "quality",
                        "suite": full.suite,
                        "gate": "stream",
                        "batch_id": batch_id,
                        "failed": full.failed_names(),
                        "rows": full.rows,
                        "mlflow_run_id": out["mlflow_run_id"],
                    },
                    severity="warning",
                )
            out["alerted"] = True
        except Exception as exc:  # noqa: BLE001 - MLflow/Prefect down: the local record still says FAILED
            log.warning("stream gate failure of batch %s not published: %s", batch_id, exc)
            out["alerted"] = False
        return out

    def _write(self, batch_id: int, record: dict[str, Any]) -> None:
        replace_file(self.root / f"batch_id={batch_id:09d}.json", json.dumps(record, default=str))

    def close(self) -> None:
        """Wait for the checks in flight."""
        self._pool.shutdown(wait=True)

    def summary(self) -> dict[str, Any]:
        return quality_summary(self.root)


def quality_summary(root: Path) -> dict[str, Any]:
    """Counts of the stream gate's records under ``root`` and the batches that failed."""
    records = [json.loads(p.read_text()) for p in sorted(root.glob("batch_id=*.json"))]
    failed = [r for r in records if r.get("passed") is False]
    return {
        "checked": len(records),
        "passed": sum(1 for r in records if r.get("passed")),
        "failed": len(failed),
        "errors": sum(1 for r in records if r.get("passed") is None),
        "failed_batches": {str(r["batch_id"]): r["failed"] for r in failed},
    }
