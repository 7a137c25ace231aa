"""librdkafka (confluent-kafka) configuration from rtml's kafka-python connection options.

rtml keeps one description of a Kafka connection, the kafka-python keyword arguments of
:func:`rtml.infra.config.kafka_clients.connection_options` (plain dicts that travel to Spark executors);
this module maps it to librdkafka's property names for the data path's clients.

>>> c = consumer_config({"bootstrap_servers": ["a:9092", "b:9092"], "security_protocol": "SASL_SSL",
...                      "sasl_mechanism": "PLAIN", "sasl_plain_username": "u", "sasl_plain_password": "p"})
>>> c["bootstrap.servers"], c["security.protocol"], c["sasl.username"], c["enable.auto.commit"]
('a:9092,b:9092', 'sasl_ssl', 'u', False)
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rtml.infra.config.kafka_oauth import librdkafka_oauth

MESSAGE_TIMEOUT_S = 120  # a record not acknowledged within this time fails (and is sent again)

_RENAMED = (
    ("sasl_mechanism", "sasl.mechanism"),
    ("sasl_plain_username", "sasl.username"),
    ("sasl_plain_password", "sasl.password"),
    ("ssl_cafile", "ssl.ca.location"),
    ("ssl_certfile", "ssl.certificate.location"),
    ("ssl_keyfile", "ssl.key.location"),
    ("ssl_password", "ssl.key.password"),
)


def common_config(opts: dict[str, Any]) -> dict[str, Any]:
    """Connection and security properties shared by producers and consumers."""
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(opts["bootstrap_servers"]),
        "security.protocol": str(opts.get("security_protocol", "PLAINTEXT")).lower(),
        "client.id": "rtml",
    }
    for ours, theirs in _RENAMED:
        if opts.get(ours) is not None:
            conf[theirs] = opts[ours]
    # OAUTHBEARER: librdkafka's own OIDC client-credentials grant, or oauth_cb with the Python provider.
    # api_version is not mapped: librdkafka asks the broker (ApiVersionRequest) and ignores it.
    return conf | librdkafka_oauth(opts)


def producer_config(opts: dict[str, Any]) -> dict[str, Any]:
    """A producer that never creates topics (librdkafka's producer default is to create them)."""
    return {
        **common_config(opts),
        "allow.auto.create.topics": False,
        "acks": "all",
        "linger.ms": 5,
        "enable.idempotence": False,  # as kafka-python; some Kafka-compatible brokers lack InitProducerId
        "partitioner": "murmur2_random",  # the partition Java clients and kafka-python choose for a key
        "message.max.bytes": 4 << 20,
        "message.timeout.ms": MESSAGE_TIMEOUT_S * 1000,
    }


def consumer_config(opts: dict[str, Any]) -> dict[str, Any]:
    """A consumer for explicitly assigned partitions: it never joins a group nor commits."""
    return {
        **common_config(opts),
        "group.id": "rtml-reader",  # required by the client; unused with assign() and no commits
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "allow.auto.create.topics": False,
        "auto.offset.reset": "error",  # an offset outside the log is an error, never a silent jump
        "max.partition.fetch.bytes": 8 << 20,
        "fetch.max.bytes": 64 << 20,
        "queued.max.messages.kbytes": 32 << 10,  # prefetch per partition: the next micro-batch's records
        "fetch.wait.max.ms": 100,  # caught up: the broker answers a fetch within this (read latency)
    }


def logger() -> logging.Logger:
    """Where librdkafka's own log lines go (it never logs passwords)."""
    return logging.getLogger("rtml.kafka")


def check_connection(opts: dict[str, Any], timeout_s: float) -> dict[str, int]:
    """Topic -> partition count from one metadata answer with librdkafka, within ``timeout_s``.

    Raises :class:`~rtml.infra.config.kafka_clients.KafkaConnectError` with the cause librdkafka
    logged (e.g. ``SASL PLAIN mechanism handshake failed``); librdkafka itself would retry forever.
    """
    from confluent_kafka import KafkaException, Producer

    from rtml.infra.config.kafka_clients import KafkaConnectError, connect_message, definitive

    causes: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            causes.append(" ".join(record.getMessage().split()))

    log = logging.getLogger("rtml.kafka.check")
    log.propagate = False
    log.setLevel(logging.WARNING)
    handler = _Keep()
    log.addHandler(handler)
    producer = Producer(
        {**producer_config(opts), "logger": log, "error_cb": lambda err: causes.append(str(err))}
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                md = producer.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                return {t: len(m.partitions) for t, m in md.topics.items() if m.error is None}
            except KafkaException as exc:
                producer.poll(0)  # serve the log lines and errors queued meanwhile
                cause = next((c for c in causes if definitive(c)), None)
                if cause is not None or time.monotonic() >= deadline:
                    cause = cause or (causes[-1] if causes else None)
                    raise KafkaConnectError(connect_message(opts, timeout_s, cause, exc)) from None
    finally:
        log.removeHandler(handler)
