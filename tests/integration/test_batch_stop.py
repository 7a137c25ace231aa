"""A micro-batch Spark plans while the job stops is refused unwritten, and a restart runs it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rtml.pipelines.batch_stop import BatchTracker, quiet_query_log
from rtml.pipelines.spark_io import spark_session
from tests.helpers import scoped_settings

pytestmark = pytest.mark.integration


def test_a_batch_begun_after_the_stop_is_refused_unwritten_and_a_restart_runs_it(
    stack, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    s = scoped_settings(stack, tmp_path)
    spark = spark_session(s)
    source, checkpoint = tmp_path / "in", tmp_path / "checkpoint"
    source.mkdir()
    pd.DataFrame({"n": range(100)}).to_parquet(source / "part-0.parquet")
    written: dict[int, list[int]] = {}

    def sink(df, batch_id: int) -> None:  # noqa: ANN001
        written[batch_id] = sorted(r.n for r in df.collect())

    def start(tracker: BatchTracker):  # noqa: ANN202
        stream = spark.readStream.schema("n long").parquet(str(source))
        writer = stream.writeStream.foreachBatch(tracker).option("checkpointLocation", str(checkpoint))
        return writer.trigger(availableNow=True).start()

    # the stop was decided (nothing written yet, so nothing to wait for) before Spark's batch 0 arrived
    tracker = BatchTracker(sink)
    assert tracker.close(committed=None)
    restore = []
    tracker.on_refuse = lambda: restore.append(quiet_query_log(spark))
    query = start(tracker)
    with pytest.raises(Exception, match="BatchRefused"):  # the query ends on the refusal
        query.awaitTermination(120)
    assert tracker.refused == 0 and tracker.is_refusal(query.exception())
    assert written == {}  # the sink never saw the batch
    assert (checkpoint / "offsets" / "0").exists() and not (checkpoint / "commits" / "0").exists()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "terminated with error" not in err, err[-2000:]
    assert len(restore) == 1
    restore[0]()  # the query's logger as before, for the queries after this one

    # the restart runs the logged batch as usual: batch 0, every row, committed
    again = BatchTracker(sink)
    query = start(again)
    query.awaitTermination(120)
    assert query.exception() is None and again.refused is None
    assert written == {0: list(range(100))}
    assert (checkpoint / "commits" / "0").exists()

    # the logger is back: a query that really fails still shows its error
    def failing(df, batch_id: int) -> None:  # noqa: ANN001
        raise ValueError("a real failure")

    (source / "part-1.parquet").write_bytes((source / "part-0.parquet").read_bytes())
    capfd.readouterr()
    query = spark.readStream.schema("n long").parquet(str(source)).writeStream.foreachBatch(failing)
    query = query.option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start()
    with pytest.raises(Exception, match="a real failure"):
        query.awaitTermination(120)
    assert "terminated with error" in capfd.readouterr().err
