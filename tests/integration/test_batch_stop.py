"""A micro-batch Spark plans while the job stops is refused unwritten, and a restart runs it.

The queries run in a process of their own, started here, so the terminal output checked is the one
its JVM writes (a JVM started earlier in the test session keeps the stderr it was started with).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import scoped_settings, settings_env

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, sys
from pathlib import Path

from rtml.infra.config.settings import load_settings
from rtml.pipelines.batch_stop import BatchTracker, quiet_query_log
from rtml.pipelines.spark_io import spark_session

source, checkpoint = Path(sys.argv[1]), Path(sys.argv[2])
spark = spark_session(load_settings())
written, seen = {}, {}


def sink(df, batch_id):
    written[batch_id] = sorted(r.n for r in df.collect())


def start(fn):
    stream = spark.readStream.schema("n long").parquet(str(source))
    writer = stream.writeStream.foreachBatch(fn).option("checkpointLocation", str(checkpoint))
    return writer.trigger(availableNow=True).start()


def run(fn):
    query = start(fn)
    try:
        query.awaitTermination(120)
    except Exception as exc:  # the query's error, as run_scoring sees it
        return str(exc)
    return None


# the stop was decided (nothing written yet, so nothing to wait for) before Spark's batch 0 arrived
tracker, restore = BatchTracker(sink), []
assert tracker.close(committed=None)
tracker.on_refuse = lambda: restore.append(quiet_query_log(spark))
error = run(tracker)
seen["refused"] = tracker.refused
seen["is_refusal"] = tracker.is_refusal(error)
seen["written_after_refusal"] = dict(written)
seen["offsets_0"] = (checkpoint / "offsets" / "0").exists()
seen["commits_0_after_refusal"] = (checkpoint / "commits" / "0").exists()
for undo in restore:
    undo()
print("--- restart", file=sys.stderr, flush=True)

# the restart runs the logged batch as usual
again = BatchTracker(sink)
seen["restart_error"] = run(again)
seen["written"] = {str(k): v for k, v in written.items()}
seen["commits_0"] = (checkpoint / "commits" / "0").exists()
print("--- real failure", file=sys.stderr, flush=True)


# the logger is back: a query that really fails still shows its error
def failing(df, batch_id):
    raise ValueError("a real failure")


(source / "part-1.parquet").write_bytes((source / "part-0.parquet").read_bytes())
seen["real_error"] = "a real failure" in (run(failing) or "")
print(json.dumps(seen))
"""


def test_a_batch_begun_after_the_stop_is_refused_unwritten_and_a_restart_runs_it(
    stack, tmp_path: Path
) -> None:
    s = scoped_settings(stack, tmp_path)
    source, checkpoint = tmp_path / "in", tmp_path / "checkpoint"
    source.mkdir()
    pd.DataFrame({"n": range(100)}).to_parquet(source / "part-0.parquet")
    script = tmp_path / "queries.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(source), str(checkpoint)],
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    refusal, rest = done.stderr.split("--- restart")
    restart, failure = rest.split("--- real failure")

    # refused: the sink never saw the batch, its offsets are logged and not committed, nothing printed
    assert seen["refused"] == 0 and seen["is_refusal"] is True
    assert seen["written_after_refusal"] == {}
    assert seen["offsets_0"] is True and seen["commits_0_after_refusal"] is False
    assert "Traceback" not in refusal and "terminated with error" not in refusal, refusal[-2000:]

    # the restart: batch 0, every row, committed
    assert seen["restart_error"] is None and "terminated with error" not in restart
    assert seen["written"] == {"0": list(range(100))} and seen["commits_0"] is True

    # the logger restored: a real failure is still printed
    assert seen["real_error"] is True and "terminated with error" in failure, failure[-2000:]
