"""The outbox never marks a batch delivered when the broker rejected some of its records."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from infra.settings import load_settings
from infra.spec import load_spec
from pipelines.outbox import KafkaOutbox


class _Producer:
    """Accepts every send; the broker 'rejects' every third record (as a timeout would)."""

    def __init__(self) -> None:
        self.n = 0

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> SimpleNamespace:
        self.n += 1
        bad = self.n % 3 == 0
        return SimpleNamespace(failed=lambda: bad, exception=TimeoutError("expired") if bad else None)

    def flush(self) -> None:
        pass


def test_partly_failed_delivery_raises_and_leaves_no_marker(tmp_path: Path) -> None:
    settings = load_settings(use_default_file=False, overrides={"state_dir": tmp_path})
    spec = load_spec()
    outbox = KafkaOutbox(settings, spec)
    outbox._producer = _Producer()
    scored = pa.table(
        {
            spec.event_id: [f"e{i}" for i in range(9)],
            spec.event_time: ["t"] * 9,
            "score": [0.5] * 9,
            "decision": [0] * 9,
            "model_version": ["1"] * 9,
            "scored_at_ms": [1] * 9,
        }
    )
    with pytest.raises(RuntimeError, match="3 of 9 records not delivered"):
        outbox._deliver("batch_id=000000001", scored, None)
    assert not (settings.sink_root / "_kafka_delivered" / "batch_id=000000001").exists()
    outbox._pool.shutdown()
