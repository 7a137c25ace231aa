"""Entity buckets over Spark's shuffle partitions: the labels rtml groups by land one bucket per task."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rtml.infra.config.settings import load_settings
from rtml.pipelines.keyed_state import bucket_labels, spark_partition
from rtml.pipelines.spark_io import spark_session

pytestmark = pytest.mark.integration


def test_bucket_labels_spread_over_the_shuffle_partitions(tmp_path: Path) -> None:
    from pyspark.sql import functions as F

    settings = load_settings(use_default_file=False, overrides={"state_dir": tmp_path / "state"})
    spark = spark_session(settings, "rtml-bucket-labels-test")
    values = spark.range(-5, 300).select(F.col("id").cast("int").alias("v"))
    for parts in (2, 3, 4, 8):  # rtml's Murmur3 is Spark's, for int keys
        got = values.select("v", F.pmod(F.hash("v"), F.lit(parts)).alias("p")).collect()
        assert {r.v: r.p for r in got} == {r.v: spark_partition(r.v, parts) for r in got}

    # the state stage's shape: group by the bucket's label, hash-partitioned over 4 shuffle partitions
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    spark.conf.set("spark.sql.adaptive.enabled", "false")  # as the streaming query (no coalescing)

    def where(key: tuple, frame: pd.DataFrame) -> pd.DataFrame:
        from pyspark import TaskContext

        return pd.DataFrame({"label": [int(key[0])], "task": [TaskContext.get().partitionId()]})

    def tasks(labels: list[int]) -> dict[int, int]:
        rows = spark.range(4000).select(
            F.element_at(F.array(*map(F.lit, labels)), (F.col("id") % 4 + 1).cast("int")).alias("b")
        )
        out = rows.groupBy("b").applyInPandas(where, "label int, task int").collect()
        return {labels.index(r.label): r.task for r in out}

    assert tasks(bucket_labels(4, 4)) == {0: 0, 1: 1, 2: 2, 3: 3}  # one bucket per task
    assert sorted(tasks([0, 1, 2, 3]).values()) == [2, 3, 3, 3]  # the bucket numbers: 3 in one task
