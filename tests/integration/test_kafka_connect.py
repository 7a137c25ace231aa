"""Drill: SASL settings against the plaintext broker fail fast with one clear line (they hung for
180 s); rtml's clients never create a missing topic. The real embedded broker, the real CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rtml.infra.config.kafka_clients import (
    connection_options,
    list_topics,
    make_admin,
    make_consumer,
    make_producer,
)
from tests.helpers import rtml, scoped_settings, settings_env

pytestmark = pytest.mark.integration

BOUND_S = 20
SASL = {
    "RTML_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "RTML_KAFKA__SASL_MECHANISM": "PLAIN",
    "RTML_KAFKA__SASL_USERNAME": "oncall",
    "RTML_KAFKA__SASL_PASSWORD": "s3cret-never-shown",
}


def _fails_fast(args: list[str], env: dict[str, str]) -> str:
    t0 = time.monotonic()
    code, out, err = rtml(*args, "--json", env=env, timeout=120)
    took = time.monotonic() - t0
    lines = [ln for ln in err.splitlines() if ln.startswith("rtml: ")]
    assert code == 1 and out is not None and out["ok"] is False, err[-2000:]
    assert took < BOUND_S, f"took {took:.1f}s"
    assert len(lines) == 1 and "Traceback" not in err
    assert "s3cret-never-shown" not in err + str(out)
    return lines[0]


@pytest.mark.parametrize("client", ["librdkafka", "kafka-python"])
def test_sasl_against_plaintext_broker_fails_fast_with_one_line(stack, tmp_path: Path, client: str) -> None:
    s = scoped_settings(stack, tmp_path)
    env = settings_env(s) | SASL | {"RTML_KAFKA__IO_CLIENT": client}
    line = _fails_fast(["produce", "--n", "100"], env)
    assert f"Kafka at {s.kafka_bootstrap} did not answer" in line
    assert "security_protocol=SASL_PLAINTEXT, sasl_mechanism=PLAIN" in line
    assert "SASL" in line.upper() and "kafka.security_protocol" in line  # the cause, and what to check
    if client == "kafka-python":  # topic creation by `rtml up` (external broker: nothing is started)
        external = env | {
            "RTML_KAFKA__BOOTSTRAP_SERVERS": s.kafka_bootstrap,
            "RTML_MLFLOW__TRACKING_URI": s.tracking_uri,
            "RTML_PREFECT__API_URL": s.prefect_api_url,
        }
        line = _fails_fast(["up"], external)
        assert line.startswith("rtml: kafka: Kafka at") and "SASL" in line.upper()


def test_tls_against_plaintext_broker_fails_within_the_bound(stack, tmp_path: Path) -> None:
    """No client reports a refused TLS handshake here (the listener just gets garbage): the check's
    own bound (10 s) ends it, with the hint that the listener may not be TLS."""
    s = scoped_settings(stack, tmp_path)
    line = _fails_fast(["produce", "--n", "100"], settings_env(s) | {"RTML_KAFKA__SECURITY_PROTOCOL": "SSL"})
    assert f"Kafka at {s.kafka_bootstrap} did not answer with security_protocol=SSL" in line
    assert "is the listener TLS?" in line and "kafka.ssl_*" in line


def test_clients_never_create_topics_and_produce_names_the_missing_one(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path)
    opts = connection_options(s)
    gone = f"{s.kafka.topics.events}.gone"
    producer = make_producer(opts, max_block_ms=3000)
    with pytest.raises(Exception, match="metadata"):
        producer.send(gone, b"x").get(timeout=10)
    producer.close()
    from kafka import TopicPartition

    consumer = make_consumer(opts, group_id=None)
    consumer.assign([TopicPartition(gone, 0)])
    consumer.poll(timeout_ms=1500)
    consumer.close()
    assert gone not in list_topics(opts)

    env = settings_env(s) | {"RTML_KAFKA__TOPICS__EVENTS": gone}
    line = _fails_fast(["produce", "--n", "10"], env)
    assert f"topic(s) {gone} do not exist" in line and "rtml up" in line
    assert gone not in list_topics(opts)


def test_up_recreates_missing_topics_on_a_running_broker_and_reports_partition_counts(stack) -> None:  # noqa: ANN001
    import uuid

    from kafka.admin import NewTopic

    from rtml.infra.app import stack as stack_mod
    from rtml.infra.config.settings import load_settings

    uid = uuid.uuid4().hex[:8]
    s = load_settings(  # the session stack's state dir and ports: `up` reuses its running services
        use_default_file=False,
        overrides={
            "state_dir": stack.state_dir,
            "ports": stack.ports.model_dump(),
            "kafka": {
                "topics": {n: f"up{uid}.{n}" for n in ("events", "labels", "scores", "quarantine", "alerts")}
            },
        },
    )
    opts = connection_options(s)
    admin = make_admin(opts)
    try:
        admin.create_topics([NewTopic(s.kafka.topics.scores, 4, 1)])  # not rtml's partition count
    finally:
        admin.close()
    result = stack_mod.up(s, timeout_s=60)
    assert all(v["action"] == "reused" for v in result["services"].values())
    assert sorted(result["topics_created"]) == sorted(
        t for t in s.kafka.topics.all() if t != s.kafka.topics.scores
    )
    assert result["topics_partitions_differ"] == {s.kafka.topics.scores: 4}
    assert set(s.kafka.topics.all()) <= list_topics(opts)
