"""Kafka for Spark through PySpark's Python Data Source API (kafka-python on the driver, librdkafka or
kafka-python in the tasks: see :mod:`rtml.pipelines.partition_reader`).

Registered as format ``rtml_kafka`` (the short name ``kafka`` is reserved by Spark). Rows look like
Spark's own Kafka source: key, value, topic, partition, offset, timestamp, timestampType, headers.
Offsets per topic-partition live in the Spark checkpoint as ``{"topic": {"0": n, ...}}`` with a
stable key order. Read options: ``subscribe`` (comma-separated topics), ``startingOffsets``
(earliest | latest | JSON), ``maxOffsetsPerTrigger``, ``onOffsetReset`` (fail | earliest | latest:
what to do when the log no longer holds the checkpoint's offsets, see
:mod:`rtml.pipelines.offset_reset`) and ``offsetResetLog`` (a directory where each reset is
recorded). Write options (:mod:`rtml.pipelines.kafka_sink`): ``topic``. Both: ``ioClient``
(librdkafka | kafka-python: the client tasks read and write with, see :mod:`rtml.pipelines.partition_reader`
and :mod:`rtml.pipelines.bulk_producer`; offsets are always discovered with kafka-python on the driver).
Connection options: see :func:`spark_options`.

The true end of a partition is taken from the high-water mark of a fetch response, not from
ListOffsets, which some Kafka-compatible brokers answer short of the end: the embedded tansu broker
answers the base offset of the last record batch + 1 (20,000 records were reported as 19,436), so a
source that trusted it would stall short of the end or lose the tail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)

from rtml.pipelines.kafka_sink import KafkaBatchWriter, KafkaStreamWriter
from rtml.pipelines.offset_reset import (
    Key,
    OffsetResetError,
    check_policy,
    missing_message,
    plan,
    read_from,
    record,
    trusted_ends,
)

FORMAT = "rtml_kafka"
SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
    "timestampType int, headers array<struct<key: string, value: binary>>"
)
# Secrets travel as options of their own: Spark redacts option keys matching 'password' or 'secret'
# in plans and the UI (the JSON of kafka.connection is not redacted).
_SECRETS = {
    "sasl_plain_password": "kafka.sasl.password",
    "ssl_password": "kafka.ssl.password",
    "oauth_client_secret": "kafka.oauth.secret",
}


def spark_options(conn: dict[str, Any]) -> dict[str, str]:
    """kafka-python connection options -> string options for the data source (secrets kept apart)."""
    conn = dict(conn)
    out = {}
    for key, option in _SECRETS.items():
        secret = conn.pop(key, None)
        if secret is not None:
            out[option] = secret
    return {"kafka.connection": json.dumps(conn)} | out


def _lower(options: Any) -> dict[str, str]:
    """Spark hands options as a case-insensitive dict whose keys come out lower-cased."""
    return {str(k).lower(): v for k, v in dict(options).items()}


def connection_from_options(options: dict[str, str]) -> dict[str, Any]:
    options = _lower(options)
    conn = json.loads(options["kafka.connection"])
    if "api_version" in conn and conn["api_version"] is not None:
        conn["api_version"] = tuple(conn["api_version"])
    for key, option in _SECRETS.items():
        if options.get(option) is not None:
            conn[key] = options[option]
    return conn


def _consumer(conn: dict[str, Any]):  # noqa: ANN202
    from rtml.infra.config.kafka_clients import make_reader_consumer

    return make_reader_consumer(conn)


def log_bounds(consumer: Any, tps: list[Any]) -> tuple[dict[Any, int], dict[Any, int], set[Any]]:
    """``(log start, true log end, partitions whose end is exact)`` of each partition.

    The end comes from fetch high-water marks (exact even where ListOffsets is not); where no fetch
    answered within the probe's time, ListOffsets' answer stands (possibly short) and the partition
    is left out of the exact set.
    """
    listed = consumer.end_offsets(tps)
    begin = consumer.beginning_offsets(tps)
    ends: dict[Any, int] = {}
    exact: set[Any] = set()
    probe = []
    for tp in tps:
        if listed[tp] <= begin[tp]:
            ends[tp] = listed[tp]  # nothing there at all
            exact.add(tp)
        else:
            probe.append(tp)
    if probe:
        consumer.assign(probe)
        for tp in probe:
            consumer.seek(tp, max(listed[tp] - 1, begin[tp]))
        seen: dict[Any, int] = {}
        deadline = time.monotonic() + 10
        while len(seen) < len(probe) and time.monotonic() < deadline:
            for tp, recs in consumer.poll(timeout_ms=200, max_records=1_000_000).items():
                if recs:
                    seen[tp] = recs[-1].offset + 1
        for tp in probe:
            hw = consumer.highwater(tp)
            ends[tp] = max(hw or 0, seen.get(tp, listed[tp]))
            if tp in seen:
                exact.add(tp)
    return begin, ends, exact


def true_end_offsets(consumer: Any, tps: list[Any]) -> dict[Any, int]:
    """End offset of each partition from fetch high-water marks (exact even where ListOffsets is not)."""
    return log_bounds(consumer, tps)[1]


@dataclass
class KafkaPartition(InputPartition):
    topic: str
    partition: int
    start: int
    end: int
    conn: dict[str, Any]
    client: str = "librdkafka"


def _offsets_json(d: dict[tuple[str, int], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (topic, part), off in sorted(d.items()):
        out.setdefault(topic, {})[str(part)] = int(off)
    return out


def _from_json(d: dict[str, dict[str, int]]) -> dict[tuple[str, int], int]:
    return {(t, int(p)): int(o) for t, parts in d.items() for p, o in parts.items()}


def _plan_key(start: dict, end: dict) -> str:
    return json.dumps([start, end], sort_keys=True)


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Offsets from the driver's kafka-python consumer; a checkpoint the log no longer holds is
    handled by the ``onOffsetReset`` option (see :mod:`rtml.pipelines.offset_reset`)."""

    def __init__(self, options: dict[str, str]) -> None:
        options = _lower(options)
        self.topics = [t.strip() for t in options["subscribe"].split(",") if t.strip()]
        self.conn = connection_from_options(options)
        self.max_rows = int(options["maxoffsetspertrigger"]) if options.get("maxoffsetspertrigger") else None
        self.starting = options.get("startingoffsets", "earliest")
        self.client = options.get("ioclient", "librdkafka")
        self.policy = check_policy(options.get("onoffsetreset", "fail"))
        self.reset_log = options.get("offsetresetlog")  # directory of reset records (None: logged only)
        self._client: Any = None  # created lazily: the reader is pickled and instantiated more than once
        self._target: tuple[dict[Key, int], dict[Key, int], set[Key]] | None = None
        self._planned: dict[str, dict[Key, int]] = {}  # (start, end) JSON -> positions, for partitions()

    def _c(self) -> Any:
        if self._client is None:
            # fresh metadata every few seconds: a topic recreated with other partitions is seen
            self._client = _consumer({**self.conn, "metadata_max_age_ms": 5000})
        return self._client

    def _tps(self) -> list[Any]:
        from kafka import TopicPartition

        c = self._c()
        tps = []
        for t in self.topics:
            parts = c.partitions_for_topic(t)
            deadline = time.monotonic() + 5
            while not parts and time.monotonic() < deadline:  # metadata may lag a (re)created topic
                time.sleep(0.5)
                parts = c.partitions_for_topic(t)
            if not parts:
                raise OffsetResetError(missing_message(t, 0, [], ",".join(self.conn["bootstrap_servers"])))
            tps += [TopicPartition(t, p) for p in sorted(parts)]
        return tps

    def _bounds(self) -> tuple[dict[Key, int], dict[Key, int], set[Key]]:
        begin, ends, exact = log_bounds(self._c(), self._tps())
        return (
            {(tp.topic, tp.partition): o for tp, o in begin.items()},
            {(tp.topic, tp.partition): o for tp, o in ends.items()},
            {(tp.topic, tp.partition) for tp in exact},
        )

    def _ends(self) -> dict[Key, int]:
        return self._bounds()[1]

    def initialOffset(self) -> dict:
        if self.starting == "earliest":
            return _offsets_json(self._bounds()[0])
        if self.starting == "latest":
            return _offsets_json(self._ends())
        return _offsets_json(_from_json(json.loads(self.starting)))

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_rows) if self.max_rows else ReadAllAvailable()

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._bounds()

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        begin = _from_json(start)
        lo, hi, exact = self._target if self._target is not None else self._bounds()
        hi = trusted_ends(begin, hi, exact)
        positions, resets, new = plan(begin, lo, hi, self.policy)
        ends = {k: max(hi[k], positions[k]) for k in positions}
        if isinstance(limit, ReadMaxRows):
            ends = _apply_row_limit(positions, ends, limit.max_rows)
        record(self.reset_log, start, self.policy, resets, new, lo)
        out = _offsets_json(ends)
        self._planned = {_plan_key(start, out): positions}  # only the latest plan is ever asked for
        return out

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        s, e = _from_json(start), _from_json(end)
        positions = self._planned.pop(_plan_key(start, end), None)
        if positions is None:  # planned by another instance (a restart replays the batch): work it out
            positions = self._replan(start, s, e)
        return [
            KafkaPartition(t, p, positions[(t, p)], off, self.conn, self.client)
            for (t, p), off in sorted(e.items())
            if off > positions[(t, p)]
        ]

    def _replan(self, start: dict, s: dict[Key, int], e: dict[Key, int]) -> dict[Key, int]:
        from kafka import TopicPartition

        tps = [TopicPartition(t, p) for t, p in sorted(e)]
        lo = {(tp.topic, tp.partition): o for tp, o in self._c().beginning_offsets(tps).items()}
        positions, resets = read_from(s, e, lo, self.policy)
        record(self.reset_log, start, self.policy, resets, [k for k in e if k not in s], lo)
        return positions

    def read(self, partition: KafkaPartition) -> Iterator[Any]:  # type: ignore[override]
        from rtml.pipelines.partition_reader import read_partition

        p = partition
        yield from read_partition(p.conn, p.topic, p.partition, p.start, p.end, p.client)

    def commit(self, end: dict) -> None:
        pass

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        _quiet_exit_when_the_query_stopped()


def _quiet_exit_when_the_query_stopped() -> None:
    """End Spark's stream-reader process quietly when the JVM closed its connection.

    Spark calls ``stop()`` in the reader's own Python process, from the ``finally`` around its command
    loop; the loop ends only by an exception. When that is EOF (the query stopped and the JVM closed the
    socket), PySpark 4 then tries to send the exception back over the closed socket, and the failed flush
    prints a traceback into the job's log at every clean stop. Nothing is left to report then, so the
    process ends here with status 0. Any other exception (an error of this reader, e.g. an offset check)
    goes on to Spark, which fails the query with it.
    """
    import os
    import sys

    if isinstance(sys.exc_info()[1], EOFError):
        sys.stderr.flush()
        os._exit(0)


def _apply_row_limit(begin: dict, ends: dict, max_rows: int) -> dict:
    """Split a row budget across partitions proportionally to their backlog, remainder included."""
    backlog = {k: max(0, ends[k] - begin.get(k, 0)) for k in ends}
    total = sum(backlog.values())
    if total <= max_rows:
        return ends
    keys = sorted(backlog)
    share = {k: backlog[k] * max_rows // total for k in keys}
    left = max_rows - sum(share.values())
    for k in sorted(keys, key=lambda k: backlog[k] - share[k], reverse=True):
        if left == 0:
            break
        if share[k] < backlog[k]:
            share[k] += 1
            left -= 1
    return {k: begin.get(k, 0) + share[k] for k in keys}


class KafkaDataSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: Any) -> KafkaStreamReader:  # noqa: N802
        return KafkaStreamReader(dict(self.options))

    def writer(self, schema: Any, overwrite: bool) -> KafkaBatchWriter:
        return KafkaBatchWriter(dict(self.options))

    def streamWriter(self, schema: Any, overwrite: bool) -> KafkaStreamWriter:  # noqa: N802
        return KafkaStreamWriter(dict(self.options))
