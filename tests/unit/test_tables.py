"""The Delta sink tables: a micro-batch is committed exactly once, reads prune by event date."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from rtml.infra.config.settings import load_settings
from rtml.pipelines.sinks import read_scored_event, read_sink
from rtml.pipelines.tables import OpenTables, append, commit_batch, open_table, read_table, recent_batch_ids

DAY = 86_400_000
T0 = 1_764_000_000_000  # 2025-11-24T16:00Z


def _settings(tmp_path: Path):  # noqa: ANN202
    return load_settings(overrides={"state_dir": str(tmp_path)}, use_default_file=False)


def _batch(ids: list[str], day: int = 0) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "transaction_id": ids,
            "score": [0.5] * n,
            "scored_at_ms": [T0 + day * DAY] * n,
            "_event_ms": [T0 + day * DAY + i for i in range(n)],
        }
    )


def test_a_replayed_batch_id_adds_no_rows(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    assert commit_batch(s, "scores", _batch(["a", "b"]), "q1-scores", 0)
    assert commit_batch(s, "scores", _batch(["c"]), "q1-scores", 1)
    version = open_table(s, "scores").version()
    assert not commit_batch(s, "scores", _batch(["c"]), "q1-scores", 1)  # the replay
    assert not commit_batch(s, "scores", _batch(["a", "b"]), "q1-scores", 0)
    assert open_table(s, "scores").version() == version  # no commit at all
    frame = read_sink(s, "scores")
    assert frame["transaction_id"].tolist() == ["a", "b", "c"]
    assert frame["batch_id"].tolist() == [0, 0, 1]
    assert open_table(s, "scores").transaction_version("q1-scores") == 1
    # a new query (checkpoint reset) starts again at batch 0 under its own application id
    assert commit_batch(s, "scores", _batch(["d"]), "q2-scores", 0)
    assert len(read_sink(s, "scores")) == 4
    assert recent_batch_ids(s, "scores") == [0, 1]


def test_tables_are_partitioned_by_event_date_and_read_windows_prune(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    for day in range(3):
        commit_batch(s, "scores", _batch([f"d{day}-{i}" for i in range(4)], day), "q", day)
    dt = open_table(s, "scores")
    assert sorted(p["event_date"] for p in dt.partitions()) == ["2025-11-24", "2025-11-25", "2025-11-26"]
    recent = read_table(s, "scores", since_event_ms=T0 + 2 * DAY)
    assert sorted(recent["transaction_id"]) == ["d2-1", "d2-2", "d2-3"]
    fragments = list(dt.to_pyarrow_dataset().get_fragments(filter=ds.field("event_date") >= "2025-11-26"))
    assert len(fragments) == 1  # one day's file, the other days' never opened
    assert len(read_sink(s, "scores", since_ms=T0 + DAY)) == 8  # processing-time window
    row = read_scored_event(s, "transaction_id", "d1-2")
    assert row is not None and row["batch"] == "batch_id=000000001" and row["_event_ms"] == T0 + DAY + 2


def test_absent_tables_read_empty(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    assert read_sink(s, "quarantine").empty and read_scored_event(s, "transaction_id", "x") is None
    assert recent_batch_ids(s, "scores") == []


def test_a_writer_keeps_its_tables_open_and_sees_other_writers_commits(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    tables = OpenTables(s)
    assert tables.get("scores") is None  # not written yet
    assert commit_batch(s, "scores", _batch(["a"]), "q", 0, tables)
    held = tables.get("scores")
    assert held is not None and held.version() == 0
    # another writer (a compaction, a backfill) commits meanwhile
    append(s, "scores", _batch(["x"]).append_column("batch_id", pa.array([-1], pa.int64())), {"other": 7})
    assert commit_batch(s, "scores", _batch(["b", "c"]), "q", 1, tables)
    assert tables.get("scores") is held and held.version() == 2  # the same object, brought up to date
    assert not commit_batch(s, "scores", _batch(["b", "c"]), "q", 1, tables)  # the replay: nothing
    assert open_table(s, "scores").version() == 2
    assert sorted(read_sink(s, "scores")["transaction_id"]) == ["a", "b", "c", "x"]
    assert held.transaction_version("other") == 7 and held.transaction_version("q") == 1
    # a commit that fails leaves nothing held: the next one opens the table afresh
    bad = _batch(["d"]).drop_columns(["_event_ms"])  # no event time: no event_date
    with pytest.raises(KeyError):
        commit_batch(s, "scores", bad, "q", 2, tables)
    assert tables.get("scores") is not held
    assert commit_batch(s, "scores", _batch(["d"]), "q", 2, tables)
    assert len(read_sink(s, "scores")) == 5
