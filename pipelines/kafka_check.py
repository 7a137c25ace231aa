"""Reach the broker before a job starts: bounded in time, with the data path's own client.

Bad SASL or TLS settings, an unreachable broker or a missing topic become one
:class:`~rtml.infra.config.kafka_clients.KafkaConnectError` line within ``CONNECT_TIMEOUT_S``
(about 1 s when the client reports a refused handshake), instead of a client retrying for minutes.
"""

from __future__ import annotations

from rtml.infra.config.kafka_clients import (
    CONNECT_TIMEOUT_S,
    KafkaConnectError,
    check_connection,
    connection_options,
)
from rtml.infra.config.settings import Settings


def check_topics(
    settings: Settings, names: list[str], timeout_s: float = CONNECT_TIMEOUT_S
) -> dict[str, int]:
    """Topic -> partition count of the broker; KafkaConnectError if it does not answer in time or
    one of ``names`` does not exist (rtml's clients never create topics: `rtml up` does)."""
    opts = connection_options(settings)
    if settings.kafka.io_client == "librdkafka":
        from rtml.pipelines.librdkafka import check_connection as check_librdkafka

        found = check_librdkafka(opts, timeout_s)
    else:
        found = check_connection(opts, timeout_s)
    missing = [t for t in dict.fromkeys(names) if t not in found]
    if missing:
        raise KafkaConnectError(
            f"topic(s) {', '.join(missing)} do not exist on {settings.kafka_bootstrap}: rtml's clients "
            "never create topics; run `rtml up`, which creates them with kafka.partitions partitions"
        )
    return found
