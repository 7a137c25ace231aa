"""Per-key cost of Spark 4's ``transformWithStateInPandas`` state calls. JSON on stdout.

Would per-entity state (the issue's O(batch) state) be viable? A tiny streaming query over
``--keys`` distinct entity keys per micro-batch (``--batches`` micro-batches of a parquet file
stream; the first creates the state, the rest read and update it), local[2], RocksDB state store,
one shuffle partition (as rtml runs):

- ``noop``: grouped by entity, no state call (the cost of one Python call per entity);
- ``value``: grouped by entity, ``ValueState.get`` + ``update`` per entity;
- ``map``: grouped by ``--buckets`` hash buckets (rtml's shape: many entities per Python call),
  ``MapState.getValue`` + ``updateValue`` per entity of the bucket's frame.

Reported per mode: median batch time (Spark's ``triggerExecution``) of the updating batches and the
time spent inside the state calls (measured in the Python worker), in µs per key.

    python benchmarks/tws_state.py [--keys 10000] [--batches 4] [--buckets 8] [--modes noop,value,map]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _processor(mode: str):  # noqa: ANN202, C901
    from pyspark.sql.streaming import StatefulProcessor

    class Proc(StatefulProcessor):
        def init(self, handle) -> None:  # noqa: ANN001
            if mode == "value":
                self.state = handle.getValueState("agg", "n long, total double")
            elif mode == "map":
                self.state = handle.getMapState("agg", "entity string", "n long, total double")

        def handleInputRows(self, key, rows, timerValues):  # noqa: ANN001, ANN201, N802, N803
            frame = pd.concat(list(rows), ignore_index=True)
            ns = 0
            if mode == "value":
                t0 = time.perf_counter_ns()
                old = self.state.get() if self.state.exists() else None
                n, total = old if old else (0, 0.0)
                self.state.update((n + len(frame), total + float(frame["amount"].sum())))
                ns = time.perf_counter_ns() - t0
            elif mode == "map":
                t0 = time.perf_counter_ns()
                for entity, amount in zip(frame["entity"].tolist(), frame["amount"].tolist(), strict=True):
                    old = self.state.getValue((entity,))
                    n, total = old if old else (0, 0.0)
                    self.state.updateValue((entity,), (n + 1, total + amount))
                ns = time.perf_counter_ns() - t0
            yield pd.DataFrame({"keys": [len(frame)], "ns": [ns]})

        def close(self) -> None:
            pass

    return Proc()


def run_mode(spark, src: Path, work: Path, mode: str, buckets: int) -> dict:  # noqa: ANN001
    from pyspark.sql import functions as F

    stream = spark.readStream.schema("entity string, amount double").option("maxFilesPerTrigger", 1)
    df = stream.parquet(str(src))
    group = "entity"
    if mode == "map":
        df = df.withColumn("bucket", F.pmod(F.hash("entity"), F.lit(buckets)))
        group = "bucket"
    out = df.groupBy(group).transformWithStateInPandas(
        statefulProcessor=_processor(mode),
        outputStructType="keys long, ns long",
        outputMode="Update",
        timeMode="None",
    )
    got: list[dict] = []

    def sink(batch, batch_id: int) -> None:  # noqa: ANN001
        row = batch.agg(F.sum("keys").alias("keys"), F.sum("ns").alias("ns")).collect()[0]
        got.append({"batch_id": batch_id, "keys": int(row["keys"] or 0), "ns": int(row["ns"] or 0)})

    q = (
        out.writeStream.foreachBatch(sink)
        .option("checkpointLocation", str(work / f"cp-{mode}"))
        .trigger(availableNow=True)
        .start()
    )
    q.awaitTermination()
    progress = {p["batchId"]: p for p in q.recentProgress if p.get("numInputRows")}
    updating = [g for g in got if g["batch_id"] > 0]  # batch 0 creates the state
    trig = [progress[g["batch_id"]]["durationMs"]["triggerExecution"] for g in updating]
    return {
        "mode": mode,
        "batches": len(got),
        "keys_per_batch": updating[0]["keys"] if updating else None,
        "batch_ms_median": statistics.median(trig) if trig else None,
        "first_batch_ms": progress[0]["durationMs"]["triggerExecution"] if 0 in progress else None,
        "state_calls_us_per_key": round(statistics.median(g["ns"] / g["keys"] / 1000 for g in updating), 2)
        if updating
        else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--buckets", type=int, default=8)
    ap.add_argument("--modes", default="noop,value,map")
    args = ap.parse_args()
    from pyspark.sql import SparkSession

    work = Path(tempfile.mkdtemp(prefix="rtml-tws-"))
    src = work / "src"
    src.mkdir()
    rng = np.random.default_rng(5)
    keys = np.array([f"card_{i:07d}" for i in range(args.keys)])
    for b in range(args.batches):
        pd.DataFrame({"entity": keys, "amount": rng.random(args.keys) * 100}).to_parquet(
            src / f"part-{b:03d}.parquet", index=False
        )
        os.utime(src / f"part-{b:03d}.parquet", (b + 1, b + 1))  # file order = batch order
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the state pre-init worker needs pandas
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.ui.enabled", "false")
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    results = [run_mode(spark, src, work, m, args.buckets) for m in args.modes.split(",")]
    spark.stop()
    noop = next((r for r in results if r["mode"] == "noop"), None)
    for r in results:
        if noop and r["batch_ms_median"] is not None and r["mode"] == "value":  # both grouped by entity
            r["batch_us_per_key_over_noop"] = round(
                (r["batch_ms_median"] - noop["batch_ms_median"]) * 1000 / args.keys, 2
            )
        if r["batch_ms_median"] is not None:
            r["batch_us_per_key"] = round(r["batch_ms_median"] * 1000 / args.keys, 2)
    print(json.dumps({"keys": args.keys, "machine": {"cores": os.cpu_count()}, "runs": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
