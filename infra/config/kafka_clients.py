"""kafka-python clients built from settings (security passthrough, API version, topic admin).

The connection options are plain dicts so they can travel to Spark executors; secrets are only
ever placed in these dicts, never logged.

rtml's clients never create topics (rtml creates them with ``kafka.partitions`` partitions: `rtml
up`, :func:`ensure_topics`): a producer or consumer that auto-created a topic deleted by a broker
reset would recreate it with the broker's default partition count and hide the reset from the
scoring job. Connection checks are bounded (:func:`check_connection`): bad SASL or TLS settings
fail within ``timeout_s`` with a one-line :class:`KafkaConnectError`, never hang.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from typing import Any

from rtml.infra.config.kafka_oauth import kafka_python_kwargs
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
    if k.sasl_mechanism == "OAUTHBEARER":  # the token source is built with the client (kafka_oauth)
        opts["sasl_mechanism"] = k.sasl_mechanism
        for key in ("oauth_token_provider", "oauth_token_endpoint_url", "oauth_client_id", "oauth_scope"):
            if getattr(k, key):
                opts[key] = getattr(k, key)
        if k.oauth_client_secret is not None:
            opts["oauth_client_secret"] = k.oauth_client_secret.get_secret_value()
    elif k.sasl_mechanism:
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = k.sasl_username
        if k.sasl_password is not None:
            opts["sasl_plain_password"] = k.sasl_password.get_secret_value()
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(k, key):
            opts[key] = getattr(k, key)
    if k.ssl_key_password is not None:
        opts["ssl_password"] = k.ssl_key_password.get_secret_value()  # kafka-python's name
    return opts


CONNECT_TIMEOUT_S = 10.0  # a broker that does not answer with these settings by then never will
# what clients log when the security settings do not match the listener: no point waiting longer
_DEFINITIVE = re.compile(r"sasl|authenticat|ssl|tls|certificate|handshake", re.IGNORECASE)


def definitive(line: str) -> bool:
    """A logged failure that no retry fixes: a refused SASL or TLS handshake, failed authentication.

    >>> definitive("sasl_ssl://b:9093/bootstrap: Connect to ipv4#10.0.0.1:9093 failed: Connection refused")
    False
    >>> definitive("sasl_plaintext://b:9092/1: SASL PLAIN mechanism handshake failed: Broker: Unsupported")
    True
    """
    return bool(_DEFINITIVE.search(re.sub(r"\b[a-z_]+://\S+", "", line)))


class KafkaConnectError(RuntimeError):
    """The broker did not answer with these connection settings in time; one line, no secrets."""


def _no_auto_create(client: Any) -> Any:
    """Make a kafka-python client's metadata requests never create topics.

    kafka-python 3.0 accepts ``allow_auto_create_topics`` but builds its cluster metadata without
    it, so every metadata request for a missing topic asks the broker to create it (measured: a
    producer and an ``assign()``-ed consumer both created missing topics). Set it where it is read.
    """
    cluster = getattr(client, "_metadata", None) or getattr(client, "_cluster", None)
    config = getattr(cluster, "config", None)
    if isinstance(config, dict) and "allow_auto_create_topics" in config:
        config["allow_auto_create_topics"] = False
    return client


def make_producer(opts: dict[str, Any], **extra: Any):  # noqa: ANN201 - kafka-python has no stubs
    from kafka import KafkaProducer

    defaults = {"acks": "all", "linger_ms": 5, "batch_size": 256 * 1024, "max_request_size": 4 * 1024 * 1024}
    kwargs = {**defaults, **kafka_python_kwargs(opts), **extra, "allow_auto_create_topics": False}
    return _no_auto_create(KafkaProducer(**kwargs))


def make_consumer(opts: dict[str, Any], *topics: str, **extra: Any):  # noqa: ANN201
    from kafka import KafkaConsumer

    defaults = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
    return _no_auto_create(
        KafkaConsumer(
            *topics, **{**defaults, **kafka_python_kwargs(opts), **extra, "allow_auto_create_topics": False}
        )
    )


def make_reader_consumer(opts: dict[str, Any]):  # noqa: ANN201
    """A consumer without group for explicitly assigned partitions (no commits), large fetches.

    An offset outside the log raises (``auto_offset_reset='none'``), never jumps silently: the
    source decides what a checkpoint the log no longer holds means (``kafka.on_offset_reset``).
    """
    return make_consumer(
        opts,
        group_id=None,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
        auto_offset_reset="none",
    )


def make_admin(opts: dict[str, Any]):  # noqa: ANN201
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**kafka_python_kwargs(opts), request_timeout_ms=10_000)


def ensure_topics(
    opts: dict[str, Any], topics: list[str], partitions: int, replication: int = 1
) -> list[str]:
    """Create missing topics; return the ones created (KafkaConnectError if the broker does not answer)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    existing = check_connection(opts)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if missing:
        admin = make_admin(opts)
        try:
            admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
    return missing


def list_topics(opts: dict[str, Any], timeout_s: float = CONNECT_TIMEOUT_S) -> set[str]:
    """Topic names from a metadata request (KafkaConnectError after ``timeout_s``)."""
    return set(check_connection(opts, timeout_s))


def check_connection(opts: dict[str, Any], timeout_s: float = CONNECT_TIMEOUT_S) -> dict[str, int]:
    """Topic -> partition count from one metadata answer, within ``timeout_s``.

    Raises :class:`KafkaConnectError` naming the broker, the security settings (never the
    password) and the cause the client logged (e.g. a refused SASL handshake). Uses a consumer, not
    the admin client: kafka-python's admin metadata parsing rejects the authorized-operations bits
    some Kafka-compatible brokers (tansu) return. The wait is bounded by a thread: kafka-python
    retries a failed handshake with a backoff of up to 30 s on its own.
    """
    causes = _Causes("kafka")
    box: dict[str, Any] = {}

    def probe() -> None:
        ms = int(timeout_s * 1000)
        try:
            box["consumer"] = make_consumer(
                opts, bootstrap_timeout_ms=ms, request_timeout_ms=max(ms, 1000) + 1000
            )
            box["consumer"].bootstrap(timeout_ms=ms)
            c = box["consumer"]
            box["topics"] = {t: len(c.partitions_for_topic(t) or ()) for t in c.topics()}
        except Exception as exc:  # noqa: BLE001 - reported below as one line
            box["error"] = exc

    with causes:
        worker = threading.Thread(target=probe, name="rtml-kafka-check", daemon=True)
        worker.start()
        deadline = time.monotonic() + timeout_s
        while worker.is_alive() and time.monotonic() < deadline and causes.first(definitive) is None:
            worker.join(0.2)
        worker.join(0.5)  # a refused handshake: the client's own error, if it raises at once
        if box.get("consumer") is not None:
            with contextlib.suppress(Exception):  # also stops a client still retrying in the thread
                box["consumer"].close()
    if "topics" in box:
        return box["topics"]
    cause = causes.first(definitive) or (causes.lines[-1] if causes.lines else None)
    raise KafkaConnectError(connect_message(opts, timeout_s, cause, box.get("error")))


def connect_message(opts: dict[str, Any], timeout_s: float, cause: str | None, exc: Any = None) -> str:
    """One line for a broker that did not answer: where, with which security settings, why."""
    proto = str(opts.get("security_protocol") or "PLAINTEXT").upper()
    how = f"security_protocol={proto}"
    if opts.get("sasl_mechanism"):
        how += f", sasl_mechanism={opts['sasl_mechanism']}"
    if cause is None or not definitive(cause):
        if exc is not None:
            text = str(exc).splitlines()[0] if str(exc) else ""
            name = type(exc).__name__
            cause = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
        cause = (cause or "no answer") + (
            " (no answer to the TLS handshake: is the listener TLS?)" if "SSL" in proto else ""
        )
    servers = ",".join(opts.get("bootstrap_servers") or [])
    return (
        f"Kafka at {servers} did not answer with {how} (waited up to {timeout_s:.0f} s): {cause[:300]}; "
        "check kafka.security_protocol, kafka.sasl_* and kafka.ssl_* against the broker's listener"
    )


class _Causes(logging.Handler):
    """While active, takes what a client library logs (WARNING and up) off the console: the cause
    of a failure goes into rtml's one-line message instead. The records still reach the log file,
    as warnings, when the check ends."""

    def __init__(self, logger: str) -> None:
        super().__init__()
        self.logger = logging.getLogger(logger)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if record.levelno >= logging.WARNING:  # the connection's repr dropped
            self.lines.append(re.sub(r"^<.*?>: ", "", " ".join(record.getMessage().split())))

    def first(self, match: Any) -> str | None:
        """The first line kept for which ``match(line)`` is true."""
        return next((line for line in list(self.lines) if match(line)), None)

    def __enter__(self) -> _Causes:
        self._level, self._propagate = self.logger.level, self.logger.propagate
        if self.logger.getEffectiveLevel() > logging.WARNING:
            self.logger.setLevel(logging.WARNING)
        self.logger.propagate = False
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)
        self.logger.propagate = self._propagate
        root = logging.getLogger()
        for record in self.records:
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
            root.handle(record)
