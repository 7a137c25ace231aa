"""The scoring job's /metrics, scraped over HTTP while the supervised job runs on the real broker, Spark
and MLflow: values match the batch records; a killed job's restart serves the same port again."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.kafka_clients import connection_options, make_consumer
from rtml.infra.config.spec import load_spec
from rtml.pipelines.metrics import ScoringMetrics
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.scoring import read_batch_records
from rtml.pipelines.supervisor import SUPERVISED_PID, ScoringSupervisor
from tests.helpers import free_port, overrides_of, read_topic, scoped_settings, wait_for

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple], float] | None:
    """Every sample of the job's /metrics as {(name, sorted labels): value}; None if nothing answers."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def expected(records: list[dict], model: str) -> dict[tuple[str, tuple], float]:
    """What /metrics must say after exactly these batch records."""
    out = {
        ("rtml_events_read_total", ()): sum(r["read"] for r in records),
        ("rtml_events_scored_total", ()): sum(r["scored"] for r in records),
        ("rtml_events_duplicates_total", ()): 0,
        ("rtml_batch_duration_seconds_count", ()): len(records),
        ("rtml_produce_to_scored_latency_seconds_count", ()): sum(r["scored"] for r in records),
        ("rtml_last_batch_timestamp_seconds", ()): max(r["ended_at_ms"] for r in records) / 1000,
        ("rtml_model_version", (("model", model), ("role", "champion"))): float(records[-1]["model_version"]),
    }
    for r in records:
        for reason, n in r["by_reason"].items():
            family, _, field = reason.partition(":")
            key = ("rtml_events_quarantined_total", (("field", field), ("reason", family)))
            out[key] = out.get(key, 0) + n
    return out


def mismatches(got: dict | None, want: dict) -> dict:
    if got is None:
        return {"scrape": "no answer"}
    return {k: (got.get(k), v) for k, v in want.items() if got.get(k) != pytest.approx(v)}


def lag_of(got: dict | None, topic: str) -> dict[str, float]:
    return {
        dict(labels)["partition"]: v
        for (name, labels), v in (got or {}).items()
        if name == "rtml_consumer_lag_events" and dict(labels)["topic"] == topic
    }


def test_metrics_match_batch_records_and_survive_a_restart(stack, tmp_path: Path) -> None:
    port = free_port()
    s = scoped_settings(
        stack,
        tmp_path,
        spark={"max_events_per_trigger": 1500},
        metrics={"port": port, "lag_interval_s": 1.0},
    )
    spec = load_spec()
    topic = s.kafka.topics.events
    bootstrap(s, spec, n=8000)
    stream_frames(s, spec, generated_frames(spec, 3000, 61, None, 1000), malformed_rate=0.05, seed=61)

    # the lag probe against the real broker, before any scoring: every event on the topic waits
    per_partition: dict[str, int] = {}
    for r in read_topic(s, topic):
        per_partition[str(r.partition)] = per_partition.get(str(r.partition), 0) + 1
    probe, consumer = ScoringMetrics(s), make_consumer(connection_options(s))
    try:
        probe.probe_lag(consumer)
    finally:
        consumer.close()
    assert sum(per_partition.values()) == 3000 and len(per_partition) == s.kafka.partitions
    assert lag_of(_samples(probe), topic) == per_partition

    caught_up = {p: 0 for p in per_partition}
    supervisor = ScoringSupervisor(s, overrides_of(s), heartbeat_s=5.0, backoff_s=1.0)
    stop = threading.Event()
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(supervisor.run(stop, 900).as_dict()))
    runner.start()
    log = lambda: (s.state_dir / "logs" / "scoring.log").read_text()[-3000:]  # noqa: E731
    model = s.mlflow.model_name
    try:
        # during the run: everything read so far, as the batch records say
        wait_for(lambda: sum(r["read"] for r in read_batch_records(s)) == 3000, 240, log)
        first = read_batch_records(s)
        assert len(first) >= 2 and sum(r["quarantined"] for r in first) > 0
        wait_for(
            lambda: not mismatches(scrape(port), expected(first, model)),
            30,
            lambda: str(mismatches(scrape(port), expected(first, model))),
        )
        wait_for(
            lambda: lag_of(scrape(port), topic) == caught_up, 30, lambda: str(lag_of(scrape(port), topic))
        )
        got = scrape(port)
        assert got[("rtml_events_read_total", ())] == 3000
        assert (
            got[("rtml_events_scored_total", ())]
            + sum(v for (n, _), v in got.items() if n == "rtml_events_quarantined_total")
            == 3000
        )
        assert ("rtml_model_version", (("model", model), ("role", "shadow"))) not in got  # no shadow today
        assert got[("rtml_batch_duration_seconds_sum", ())] == pytest.approx(
            sum(r["seconds"] for r in first), abs=0.001 * len(first)
        )
        started = got[("process_start_time_seconds", ())]

        # a crash: the supervisor restarts the job, which binds the same port again
        first_pid = json.loads((s.state_dir / "run" / SUPERVISED_PID).read_text())["pid"]
        os.killpg(first_pid, signal.SIGKILL)
        wait_for(
            lambda: json.loads((s.state_dir / "run" / SUPERVISED_PID).read_text())["pid"] != first_pid, 60
        )
        wait_for(
            lambda: (scrape(port) or {}).get(("process_start_time_seconds", ())) not in (None, started),
            120,
            log,
        )
        stream_frames(s, spec, generated_frames(spec, 2000, 62, None, 1000), malformed_rate=0.05, seed=62)
        wait_for(lambda: sum(r["read"] for r in read_batch_records(s)) == 5000, 240, log)
        second = [r for r in read_batch_records(s) if r["batch_id"] > max(b["batch_id"] for b in first)]
        assert sum(r["read"] for r in second) == 2000
        # the new process counts from zero: exactly the batches it ran
        wait_for(
            lambda: not mismatches(scrape(port), expected(second, model)),
            30,
            lambda: str(mismatches(scrape(port), expected(second, model))),
        )
        wait_for(
            lambda: lag_of(scrape(port), topic) == caught_up, 30, lambda: str(lag_of(scrape(port), topic))
        )
    finally:
        stop.set()
        runner.join(timeout=180)
    assert result["restarts"] == 1 and -signal.SIGKILL in result["exits"]
    assert scrape(port) is None, "the port is still served after the job stopped"


def _samples(m: ScoringMetrics) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in m.registry.collect() for s in f.samples
    }
