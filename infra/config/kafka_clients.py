"""kafka-python clients built from settings (security passthrough, API version, topic admin).

The connection options are plain dicts so they can travel to Spark executors; secrets are only
ever placed in these dicts, never logged.
"""

from __future__ import annotations

import time
from typing import Any

from rtml.infra.config.settings import KafkaSettings, Settings

IO_CLIENTS = ("librdkafka", "kafka-python")  # clients of the data path (setting kafka.io_client)


def check_io_client(client: str) -> str:
    """``client`` if it names a data-path client, else a one-line ValueError."""
    if client not in IO_CLIENTS:
        raise ValueError(f"unknown Kafka client {client!r}: use one of {', '.join(IO_CLIENTS)}")
    return client


def connection_options(settings: Settings) -> dict[str, Any]:
    """kafka-python keyword arguments common to producer, consumer and admin clients."""
    k: KafkaSettings = settings.kafka
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": k.security_protocol,
    }
    api = k.api_version_tuple()
    if api is not None:
        opts["api_version"] = api
    if k.sasl_mechanism:
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = k.sasl_username
        if k.sasl_password is not None:
            opts["sasl_plain_password"] = k.sasl_password.get_secret_value()
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(k, key):
            opts[key] = getattr(k, key)
    return opts


def make_producer(opts: dict[str, Any], **extra: Any):  # noqa: ANN201 - kafka-python has no stubs
    from kafka import KafkaProducer

    defaults = {"acks": "all", "linger_ms": 5, "batch_size": 256 * 1024, "max_request_size": 4 * 1024 * 1024}
    return KafkaProducer(**{**defaults, **opts, **extra})


def make_consumer(opts: dict[str, Any], *topics: str, **extra: Any):  # noqa: ANN201
    from kafka import KafkaConsumer

    defaults = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
    return KafkaConsumer(*topics, **{**defaults, **opts, **extra})


def make_reader_consumer(opts: dict[str, Any]):  # noqa: ANN201
    """A consumer without group for explicitly assigned partitions (no commits), large fetches."""
    return make_consumer(opts, group_id=None, max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)


def make_admin(opts: dict[str, Any]):  # noqa: ANN201
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**opts, request_timeout_ms=10_000)


def ensure_topics(
    opts: dict[str, Any], topics: list[str], partitions: int, replication: int = 1
) -> list[str]:
    """Create missing topics; return the ones created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    missing = [t for t in dict.fromkeys(topics) if t not in list_topics(opts)]
    if missing:
        admin = make_admin(opts)
        try:
            admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
    return missing


def list_topics(opts: dict[str, Any]) -> set[str]:
    """Topic names from a metadata request.

    Uses a consumer, not the admin client: kafka-python's admin metadata parsing rejects the
    authorized-operations bits some Kafka-compatible brokers (tansu) return.
    """
    consumer = make_consumer(opts)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def wait_for_broker(opts: dict[str, Any], timeout_s: float = 30.0) -> bool:
    """True once the broker answers a metadata request."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            list_topics(opts)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            time.sleep(0.5)
    return False
