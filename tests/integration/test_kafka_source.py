"""The rtml_kafka Python data source: writer, reader, admission control, AvailableNow, restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rtml.pipelines.spark_io import read_kafka_stream, spark_session, write_kafka
from tests.helpers import read_topic, scoped_settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("client", ["librdkafka", "kafka-python"])
def test_write_then_read_in_limited_micro_batches(stack, tmp_path: Path, client: str) -> None:
    s = scoped_settings(stack, tmp_path)
    s.kafka.io_client = client  # the client Spark tasks read and write with
    spark = spark_session(s)
    rows = [(f"k{i}", json.dumps({"i": i})) for i in range(5000)]
    write_kafka(spark.createDataFrame(rows, "key string, value string"), s, s.kafka.topics.events)
    assert len(read_topic(s, s.kafka.topics.events)) == 5000

    seen: list[int] = []

    def collect(df, batch_id: int) -> None:  # noqa: ANN001
        seen.append(df.count())
        df.selectExpr(
            "cast(value as string) v",
            "cast(key as string) k",
            "partition",
            "offset",
            "cast(timestamp as long) ts",
            "timestampType",
            "transform(headers, h -> h.key || '=' || cast(h.value as string)) hs",
        ).write.mode("append").parquet(str(tmp_path / "out"))

    def run() -> None:
        q = (
            read_kafka_stream(spark, s, s.kafka.topics.events, max_per_trigger=1200)
            .writeStream.foreachBatch(collect)
            .option("checkpointLocation", str(tmp_path / "ck"))
            .trigger(availableNow=True)
            .start()
        )
        q.awaitTermination()

    run()
    assert sum(seen) == 5000
    assert max(seen) <= 1200 and len([n for n in seen if n]) >= 5  # the row budget is honoured
    from rtml.infra.config.kafka_clients import connection_options
    from rtml.pipelines.bulk_producer import make_bulk_producer

    producer = make_bulk_producer(connection_options(s), client)
    value = json.dumps({"i": 5000}).encode()
    assert producer.send_all([(s.kafka.topics.events, b"x", value, None, [("origin", b"test")])]) == []
    producer.close()
    seen.clear()
    run()  # restart from the checkpoint: exactly the new record
    assert seen == [1]
    import pandas as pd

    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == 5001 and out[["partition", "offset"]].drop_duplicates().shape[0] == 5001
    assert sorted(json.loads(v)["i"] for v in out["v"]) == list(range(5001))
    assert sorted(out["k"]) == sorted([f"k{i}" for i in range(5000)] + ["x"])
    assert (out["timestampType"] == 0).all()  # CreateTime, as Spark's own source reports it
    assert out["ts"].between(time.time() - 600, time.time() + 5).all()
    with_headers = out[out["hs"].map(len) > 0]
    assert with_headers["k"].tolist() == ["x"] and list(with_headers["hs"].iloc[0]) == ["origin=test"]
