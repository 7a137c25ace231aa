"""Data tier: the executor-side sink writes files as a task would, the driver commits them once.

No Spark: the tasks' ``mapInArrow`` function is called directly on Arrow batches (two "tasks"), its
metadata rows gathered and committed like the driver does, then compared with the driver path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rtml.infra.config.settings import load_settings
from rtml.infra.config.spec import load_spec
from rtml.pipelines.entity_state import DUPLICATE
from rtml.pipelines.executor_sink import (
    TABLES,
    committed_files,
    gather,
    read_slices,
    split_batch,
    task_writer,
)
from rtml.pipelines.quarantine import QuarantinePayloads
from rtml.pipelines.scorer import score_arrow_schema
from rtml.pipelines.tables import commit_batch, commit_files, open_table, read_table, table_uri

SPEC = load_spec()
T0 = 1_764_000_000_000  # 2025-11-24T16:00Z
DAY = 86_400_000


def _batch(n: int, seed: int, k: int = 0) -> pa.Table:
    """A scored micro-batch as the scoring stage emits it: valid rows, invalid ones, duplicates,
    some rows with a shadow score, events over two days."""
    rng = np.random.default_rng(seed)
    schema = score_arrow_schema(SPEC, k)
    kind = rng.choice(["ok", "bad", "dup"], size=n, p=[0.85, 0.1, 0.05])
    reason = np.where(kind == "bad", rng.choice(["wrong_type:amount", "unparseable_json"], n), None)
    reason = np.where(kind == "dup", DUPLICATE, reason)
    cols: dict[str, list] = {}
    for f in schema:
        if pa.types.is_string(f.type):
            cols[f.name] = [f"{f.name}-{seed}-{i % 97}" for i in range(n)]
        elif pa.types.is_floating(f.type):
            cols[f.name] = rng.random(n).tolist()
        elif pa.types.is_binary(f.type):
            cols[f.name] = [b'{"x": 1}' if r else None for r in reason]
        else:
            cols[f.name] = rng.integers(0, 10_000, n).tolist()
    cols[SPEC.event_id] = [f"e{seed}-{i}" for i in range(n)]
    cols["_reason"] = reason.tolist()
    cols["_event_ms"] = (T0 + rng.integers(0, 2 * DAY, n)).tolist()
    cols["model_version"] = ["3"] * n
    cols["shadow_version"] = ["4" if i % 3 == 0 else None for i in range(n)]
    cols["latency_ms"] = rng.integers(5, 1500, n).tolist()
    return pa.Table.from_pydict(cols, schema=schema)


def _settings(tmp_path: Path, name: str):  # noqa: ANN202
    return load_settings(overrides={"state_dir": str(tmp_path / name)}, use_default_file=False)


def _run_tasks(s, table: pa.Table, batch_id: int, tasks: int = 2):  # noqa: ANN001, ANN202
    uris = {t: table_uri(s, t) for t in TABLES}
    write = task_writer(uris, None, SPEC, s.scoring, batch_id)
    half = -(-table.num_rows // tasks)
    metas = [b for i in range(tasks) for b in write(iter(table.slice(i * half, half).to_batches(700)))]
    return gather(pa.Table.from_batches(metas))


def _commit(s, files, batch_id: int) -> dict[str, bool]:  # noqa: ANN001
    return {
        t: commit_files(s, t, files.files[t], files.schemas[t], f"app-{t}", batch_id) for t in files.files
    }


def _rows(s, name: str) -> pa.Table:  # noqa: ANN001
    frame = read_table(s, name)
    if "quarantined_at_ms" in frame:  # the write's clock, and its UTC day partitions the table
        frame = frame.drop(columns=["quarantined_at_ms", "event_date"], errors="ignore")
    return frame.sort_values(sorted(frame.columns)).reset_index(drop=True)


@pytest.mark.parametrize("explain_k", [0, 2])
def test_task_files_committed_once_equal_the_driver_path(tmp_path: Path, explain_k: int) -> None:
    ex, dr = _settings(tmp_path, "executors"), _settings(tmp_path, "driver")
    batches = [_batch(3000, seed=1), _batch(2000, seed=2, k=explain_k)]  # columns may come and go
    for batch_id, table in enumerate(batches):
        files = _run_tasks(ex, table, batch_id)
        assert _commit(ex, files, batch_id) == {"scores": True, "shadow": True, "quarantine": True}
        scored, shadowed, bad, dups = split_batch(
            table, SPEC, QuarantinePayloads(dr.scoring, SPEC.entity_key)
        )
        for name, part in (("scores", scored), ("shadow", shadowed), ("quarantine", bad)):
            assert commit_batch(dr, name, part, f"app-{name}", batch_id)
        # the counts the driver gets from metadata rows only
        c = files.counts
        assert files.meta_rows < 20 and c["read"] == table.num_rows
        assert c["read"] == c["scored"] + (files.rows("quarantine") - c["duplicates"]) + c["duplicates"]
        assert c["scored"] == scored.num_rows == files.rows("scores")
        assert c["duplicates"] == dups > 0 and c["shadowed"] == shadowed.num_rows == files.rows("shadow")
        reasons = pc.value_counts(bad.column("reason")).to_pylist()
        assert files.by_reason == {r["values"]: r["counts"] for r in reasons if r["values"] != DUPLICATE}
        lat = scored.column("latency_ms").to_numpy()
        for q in (50, 99):
            assert files.percentile(q) == pytest.approx(float(np.percentile(lat, q)), abs=1e-9)

    versions = {t: open_table(ex, t).version() for t in TABLES}
    first = {t: sorted(f["path"] for f in v) for t, v in files.files.items()}
    replay = _run_tasks(ex, batches[1], 1)  # a replayed batch: its tasks write again (orphan files)
    assert _commit(ex, replay, 1) == {"scores": False, "shadow": False, "quarantine": False}
    assert {t: open_table(ex, t).version() for t in TABLES} == versions  # one commit per table per batch
    assert versions == {t: 1 + (t == "scores" and explain_k > 0) for t in TABLES}
    # the replay's Kafka output comes from the files committed the first time, not its orphans
    assert {t: sorted(v) for t, v in committed_files(ex, 1).items()} == first
    for name in TABLES:
        got, want = _rows(ex, name), _rows(dr, name)
        assert len(got) == len(want) > 0 and set(got.columns) == set(want.columns), name
        assert got.astype(str).equals(want[got.columns].astype(str)), name
    # the Delta log carries file statistics (pruning): row counts and min/max
    actions = pa.table(open_table(ex, "scores").get_add_actions(flatten=True)).to_pydict()
    assert sum(actions["num_records"]) == len(_rows(ex, "scores"))
    assert all(v is not None for v in actions["min.scored_at_ms"])


def test_committed_batch_reads_back_in_bounded_slices(tmp_path: Path) -> None:
    s = _settings(tmp_path, "slices")
    table = _batch(4000, seed=5)
    files = _run_tasks(s, table, 0)
    _commit(s, files, 0)
    paths = [f["path"] for f in files.files["scores"]]
    slices = list(read_slices(table_uri(s, "scores"), None, paths, 500))
    assert max(t.num_rows for t in slices) <= 500
    ids = pa.concat_tables(slices).column(SPEC.event_id).to_pylist()
    assert sorted(ids) == sorted(read_table(s, "scores")[SPEC.event_id]) and len(ids) == len(set(ids))
    assert "batch_id" not in slices[0].column_names
