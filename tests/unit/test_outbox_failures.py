"""The outbox never marks a batch delivered when the broker rejected some of its records."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from rtml.infra.config.settings import load_settings
from rtml.infra.config.spec import load_spec
from rtml.pipelines.bulk_producer import DeliveryError
from rtml.pipelines.outbox import KafkaOutbox


class _Producer:
    """The broker 'rejects' every third send (as an expiry would) and always rejects record e2."""

    def __init__(self) -> None:
        self.n = 0
        self.accepted: list[bytes] = []

    def send_all(self, records: list[tuple]) -> list[tuple[tuple, str]]:
        failed = []
        for r in records:
            self.n += 1
            if self.n % 3 == 0 or (r[1] == b"e2" and self.always_reject_e2):
                failed.append((r, "KafkaTimeoutError: expired"))
            else:
                self.accepted.append(r[1])
        return failed

    def close(self) -> None:
        pass


def _scored(spec) -> pa.Table:  # noqa: ANN001
    return pa.table(
        {
            spec.event_id: [f"e{i}" for i in range(9)],
            spec.event_time: ["t"] * 9,
            "score": [0.5] * 9,
            "decision": [0] * 9,
            "model_version": ["1"] * 9,
            "scored_at_ms": [1] * 9,
        }
    )


def _outbox(tmp_path: Path, always_reject_e2: bool) -> tuple:
    """Settings, spec, an outbox whose producer is the rejecting fake, and that fake."""
    settings = load_settings(use_default_file=False, overrides={"state_dir": tmp_path})
    spec = load_spec()
    outbox = KafkaOutbox(settings, spec)
    outbox._producer = producer = _Producer()
    producer.always_reject_e2 = always_reject_e2
    return settings, spec, outbox, producer


def test_records_the_broker_rejected_are_sent_again(tmp_path: Path) -> None:
    settings, spec, outbox, producer = _outbox(tmp_path, always_reject_e2=False)
    outbox._deliver("batch_id=000000001", _scored(spec), None)
    assert sorted(producer.accepted) == sorted(f"e{i}".encode() for i in range(9))  # each exactly once
    assert (settings.sink_root / "_kafka_delivered" / "batch_id=000000001").exists()
    outbox._pool.shutdown()


def test_undeliverable_records_raise_and_leave_no_marker(tmp_path: Path) -> None:
    settings, spec, outbox, _producer = _outbox(tmp_path, always_reject_e2=True)
    with pytest.raises(DeliveryError, match="batch_id=000000001: 1 of 9 records not delivered.*expired"):
        outbox._deliver("batch_id=000000001", _scored(spec), None)
    assert not (settings.sink_root / "_kafka_delivered" / "batch_id=000000001").exists()
    outbox._pool.shutdown()
