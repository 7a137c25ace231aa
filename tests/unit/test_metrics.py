"""The scoring job's Prometheus metrics: what a batch record and Spark's progress turn into, and the
HTTP endpoint (bind address, port in use, re-binding the same port after a restart)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import requests

from rtml.infra.config.settings import load_settings
from rtml.pipelines.metrics import ScoringMetrics, start_metrics
from tests.helpers import free_port


def _settings(tmp_path: Path, port: int = 0, **metrics):  # noqa: ANN202
    return load_settings(
        use_default_file=False,
        overrides={"state_dir": tmp_path / "state", "metrics": {"port": port, **metrics}},
    )


def _batch(batch_id: int, read: int, scored: int, by_reason: dict[str, int], version: str = "3") -> dict:
    return {
        "batch_id": batch_id,
        "read": read,
        "scored": scored,
        "quarantined": sum(by_reason.values()),
        "by_reason": by_reason,
        "model_version": version,
        "seconds": 0.75 + batch_id,
        "ended_at_ms": 1_700_000_000_000 + batch_id * 1000,
    }


def test_batch_records_become_counters_histograms_and_gauges(tmp_path: Path) -> None:
    m = ScoringMetrics(_settings(tmp_path))
    v = m.registry.get_sample_value
    assert v("rtml_events_read_total") == 0 and v("rtml_events_duplicates_total") == 0
    assert v("rtml_last_batch_timestamp_seconds") == 0
    m.record_batch(
        _batch(0, 10, 7, {"wrong_type:amount": 2, "invalid_json": 1}),
        np.array([40, 300, 900, 1500, 2, 7000, 80]),
    )
    m.record_batch(_batch(1, 5, 4, {"wrong_type:amount": 1}, version="4"), np.array([100, 200, 300, 400]))
    m.record_batch(_batch(2, 0, 0, {}, version="4"), None)  # an empty micro-batch
    assert v("rtml_events_read_total") == 15 and v("rtml_events_scored_total") == 11
    assert v("rtml_events_quarantined_total", {"reason": "wrong_type", "field": "amount"}) == 3
    assert v("rtml_events_quarantined_total", {"reason": "invalid_json", "field": ""}) == 1
    assert v("rtml_events_duplicates_total") == 0
    lat = "rtml_produce_to_scored_latency_seconds"
    assert v(f"{lat}_count") == 11 and v(f"{lat}_sum") == pytest.approx(10.822)
    assert v(f"{lat}_bucket", {"le": "0.05"}) == 2  # 0.002 s and 0.04 s
    assert v(f"{lat}_bucket", {"le": "0.25"}) == 5  # + 0.08, 0.1, 0.2
    assert v(f"{lat}_bucket", {"le": "1.0"}) == 9
    assert v(f"{lat}_bucket", {"le": "5.0"}) == 10 and v(f"{lat}_bucket", {"le": "+Inf"}) == 11
    assert v("rtml_batch_duration_seconds_count") == 3
    assert v("rtml_batch_duration_seconds_sum") == pytest.approx(0.75 * 3 + 3)
    assert v("rtml_model_version", {"model": "rtml-fraud", "role": "champion"}) == 4
    assert v("rtml_model_version", {"model": "rtml-fraud", "role": "shadow"}) is None  # no shadow today
    assert v("rtml_last_batch_timestamp_seconds") == 1_700_000_002


def test_duplicates_count_when_batch_records_carry_them(tmp_path: Path) -> None:
    m = ScoringMetrics(_settings(tmp_path))
    m.record_batch({**_batch(0, 10, 8, {}), "duplicates": 2}, np.array([1.0] * 8))
    assert m.registry.get_sample_value("rtml_events_duplicates_total") == 2


def test_offset_resets_in_a_batch_record_become_counters(tmp_path: Path) -> None:
    from rtml.pipelines.offset_reset import for_batch, plan, record

    start = {("e", 0): 80, ("e", 1): 90}
    _, resets, new = plan(start, {("e", 0): 0, ("e", 1): 0}, {("e", 0): 50, ("e", 1): 60}, "latest")
    record(tmp_path / "resets", {"e": {"0": 80, "1": 90}}, "latest", resets, new, {})
    entries = for_batch(tmp_path / "resets", tmp_path / "batch.json")
    m = ScoringMetrics(_settings(tmp_path))
    m.record_batch({**_batch(0, 0, 0, {}), "offset_resets": entries}, None)
    v = m.registry.get_sample_value
    assert v("rtml_kafka_offset_resets_total", {"topic": "e", "partition": "0", "policy": "latest"}) == 1
    assert v("rtml_kafka_offsets_skipped_total", {"topic": "e", "partition": "0"}) == 50
    assert v("rtml_kafka_offsets_skipped_total", {"topic": "e", "partition": "1"}) == 60
    m.record_batch(_batch(1, 3, 3, {}), np.array([1.0] * 3))  # a batch without resets adds none
    assert v("rtml_kafka_offsets_skipped_total", {"topic": "e", "partition": "0"}) == 50


def test_shadow_version_is_a_labelled_series_that_can_be_removed(tmp_path: Path) -> None:
    m = ScoringMetrics(_settings(tmp_path))
    m.set_version("shadow", "5")
    assert m.registry.get_sample_value("rtml_model_version", {"model": "rtml-fraud", "role": "shadow"}) == 5
    m.set_version("shadow", None)
    m.set_version("shadow", None)  # removing twice is fine
    assert (
        m.registry.get_sample_value("rtml_model_version", {"model": "rtml-fraud", "role": "shadow"}) is None
    )


def test_lag_per_partition_is_true_end_minus_processed(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    m = ScoringMetrics(s)
    topic = s.kafka.topics.events

    def lag(p: int) -> float | None:
        return m.registry.get_sample_value("rtml_consumer_lag_events", {"topic": topic, "partition": str(p)})

    # Python data sources report offsets as a JSON string; other topics are ignored
    m.record_progress(
        {"sources": [{"endOffset": json.dumps({topic: {"0": 100, "1": 40}, "other": {"0": 9}})}]}
    )
    assert lag(0) is None  # no end offsets read yet: no figure rather than a wrong one
    m.ends = {0: 150, 1: 40, 2: 7}
    m.record_progress({"sources": [{"endOffset": {topic: {"0": 120, "1": 40}}}]})
    assert (lag(0), lag(1), lag(2)) == (30, 0, 7)  # partition 2 never processed: all of it waits
    m.ends = {0: 110, 1: 40, 2: 7}  # an end read before the last batch completed: never negative
    m.record_progress({"sources": [{"endOffset": None}]})  # a progress without offsets changes nothing
    m._update_lag()
    assert lag(0) == 0
    m.ends = {0: 5}  # the topic came back with one partition: no stale series for the others
    m._update_lag()
    assert (lag(0), lag(1), lag(2)) == (0, None, None)


def test_metrics_off_with_port_zero(tmp_path: Path) -> None:
    assert start_metrics(_settings(tmp_path, port=0), "1") is None


def test_endpoint_binds_loopback_and_rebinds_the_same_port_after_close(tmp_path: Path) -> None:
    port = free_port()
    s = _settings(tmp_path, port=port)
    first = ScoringMetrics(s)
    first.record_batch(_batch(0, 3, 3, {}), np.array([10, 20, 30]))
    first.serve()
    try:
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert (
            "rtml_events_read_total 3.0" in body
            and "rtml_produce_to_scored_latency_seconds_count 3.0" in body
        )
        assert _listening_address(port) == "127.0.0.1"
        with pytest.raises(
            RuntimeError, match=rf"metrics: cannot listen on 127\.0\.0\.1:{port} .*metrics\.port"
        ):
            ScoringMetrics(s).serve()  # a second job on the same port fails with a clear message
    finally:
        first.close()
    # the scrape left a connection in TIME_WAIT; a restarted job binds the port again at once
    second = ScoringMetrics(s)
    second.serve()
    try:
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "rtml_events_read_total 0.0" in body  # a new process starts its counters from zero
    finally:
        second.close()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is still served after close()"


def _listening_address(port: int) -> str:
    """Local address of the listening TCP socket on ``port`` (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":  # LISTEN
            return socket.inet_ntoa(bytes.fromhex(addr)[::-1])
    raise AssertionError(f"nothing listens on port {port}")
