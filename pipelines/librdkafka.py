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
from typing import Any

MESSAGE_TIMEOUT_S = 120  # a record not acknowledged within this time fails (and is sent again)

_RENAMED = (
    ("sasl_mechanism", "sasl.mechanism"),
    ("sasl_plain_username", "sasl.username"),
    ("sasl_plain_password", "sasl.password"),
    ("ssl_cafile", "ssl.ca.location"),
    ("ssl_certfile", "ssl.certificate.location"),
    ("ssl_keyfile", "ssl.key.location"),
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
    return conf


def producer_config(opts: dict[str, Any]) -> dict[str, Any]:
    return {
        **common_config(opts),
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
        "max.partition.fetch.bytes": 8 << 20,
        "fetch.max.bytes": 64 << 20,
        "queued.max.messages.kbytes": 32 << 10,  # prefetch per partition: the next micro-batch's records
        "fetch.wait.max.ms": 100,  # caught up: the broker answers a fetch within this (read latency)
    }


def logger() -> logging.Logger:
    """Where librdkafka's own log lines go (it never logs passwords)."""
    return logging.getLogger("rtml.kafka")
