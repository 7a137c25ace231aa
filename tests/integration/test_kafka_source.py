"""The rtml_kafka Python data source: writer, reader, admission control, AvailableNow, restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.spark_io import read_kafka_stream, spark_session, write_kafka
from tests.helpers import read_topic, scoped_settings

pytestmark = pytest.mark.integration


def test_write_then_read_in_limited_micro_batches(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path)
    spark = spark_session(s)
    rows = [(f"k{i}", json.dumps({"i": i})) for i in range(5000)]
    write_kafka(spark.createDataFrame(rows, "key string, value string"), s, s.kafka.topics.events)
    assert len(read_topic(s, s.kafka.topics.events)) == 5000

    seen: list[int] = []

    def collect(df, batch_id: int) -> None:  # noqa: ANN001
        seen.append(df.count())
        df.selectExpr("cast(value as string) v", "partition", "offset").write.mode("append").parquet(
            str(tmp_path / "out")
        )

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
    write_kafka(
        spark.createDataFrame([("x", json.dumps({"i": 5000}))], "key string, value string"),
        s,
        s.kafka.topics.events,
    )
    seen.clear()
    run()  # restart from the checkpoint: exactly the new record
    assert seen == [1]
    import pandas as pd

    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == 5001 and out[["partition", "offset"]].drop_duplicates().shape[0] == 5001
    assert sorted(json.loads(v)["i"] for v in out["v"]) == list(range(5001))
