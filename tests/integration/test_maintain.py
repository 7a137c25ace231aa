"""rtml-maintain on real Delta tables written through the real writers: many small commits are
compacted (rows and content unchanged), partitions older than retention and outside the guard are
deleted, the others kept; a replayed run commits nothing; the labels refresh still reads its change
data afterwards; the same through `rtml maintain --json`. Plus what delta-rs 1.6.6 does when the
scoring job appends while a compaction or a retention delete is in flight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rtml.flows.maintain import maintain_flow
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.spec import load_spec
from rtml.pipelines.labelled import refresh_labelled
from rtml.pipelines.labels import INGEST_APP
from rtml.pipelines.maintenance import TABLES
from rtml.pipelines.tables import append, commit_batch, open_table
from tests.helpers import overrides_of, rtml, scoped_settings, settings_env

pytestmark = pytest.mark.integration

DAY, HOUR = 86_400_000, 3_600_000
D0 = 1_764_028_800_000  # 2025-11-25 00:00 UTC
SPEC = load_spec()  # label horizon 2d
ID, LABEL = SPEC.event_id, SPEC.label.field
DAYS, BATCHES, ROWS = 6, 8, 25
NOW = D0 + (DAYS - 1) * DAY + 23 * HOUR  # fake clock: the evening of the last day


def _day(i: int) -> str:
    return pd.to_datetime(D0 + i * DAY, unit="ms", utc=True).strftime("%Y-%m-%d")


def _write_history(s) -> None:  # noqa: ANN001
    """DAYS days x BATCHES micro-batches of ROWS scored events (one small file each), a quarantined
    event per batch, a label per batch."""
    rng = np.random.default_rng(7)
    for d in range(DAYS):
        for b in range(BATCHES):
            batch = d * BATCHES + b
            t = D0 + d * DAY + b * HOUR + np.arange(ROWS) * 60_000
            scores = pa.table(
                {
                    ID: [f"e{batch}-{i}" for i in range(ROWS)],
                    "score": rng.random(ROWS),
                    "decision": np.zeros(ROWS, dtype="int64"),
                    "scored_at_ms": t,
                    "_event_ms": t,
                }
            )
            commit_batch(s, "scores", scores, "q-scores", batch)
            quarantined = pa.table({"reason": ["schema"], "quarantined_at_ms": [int(t[0])]})
            commit_batch(s, "quarantine", quarantined, "q-quarantine", batch)
            label = pa.table({ID: [f"e{batch}-0"], LABEL: [1], "labelled_at_ms": [int(t[-1]) + HOUR]})
            append(s, "labels", label, {INGEST_APP: batch + 1})
        refresh_labelled(s, SPEC, now_ms=D0 + d * DAY + 12 * HOUR)


def _rows(s, name: str) -> pd.DataFrame:  # noqa: ANN001
    frame = open_table(s, name).to_pandas()
    return frame.sort_values(sorted(frame.columns)).reset_index(drop=True)[sorted(frame.columns)]


def _files(s, name: str) -> pd.Series:  # noqa: ANN001
    acts = pa.table(open_table(s, name).get_add_actions(flatten=True)).to_pandas()
    return acts.groupby("partition.event_date").size()


def test_maintain_flow_compacts_applies_retention_outside_the_guard_and_replays_as_no_op(
    stack, tmp_path: Path
) -> None:
    s = scoped_settings(
        stack,
        tmp_path,
        maintenance={"retention_days": dict.fromkeys(TABLES, 3), "vacuum_retain_hours": 0},
        retrain={"sliding_window": "1d"},
        drift={"performance_window": "1d"},
    )
    _write_history(s)
    before = {t: _rows(s, t) for t in TABLES}
    files = {t: _files(s, t) for t in TABLES}
    assert (files["scores"] == BATCHES).all() and len(files["scores"]) == DAYS

    with prefect_api(s):
        out = maintain_flow(overrides=overrides_of(s), now_ms=NOW)
    by_table = {t["table"]: t for t in out["tables"]}
    # guard: the label horizon (newest event, day 5 07:24, minus 2d) -> day 3; retention 3d -> day 2
    assert out["guard"]["by"] == "label_horizon" and out["guard"]["keep_from"] == _day(3)
    assert not out["warnings"]
    kept_days = [_day(d) for d in range(2, DAYS)]
    for name in TABLES:
        r = by_table[name]
        assert r["delete_before"] == _day(2) and r["partitions_deleted"] == 2, r
        after = _rows(s, name)
        assert sorted(after["event_date"].unique()) == kept_days, name
        # the kept partitions: exactly the rows (and values) they had
        expected = before[name][before[name]["event_date"] >= _day(2)].reset_index(drop=True)
        pd.testing.assert_frame_equal(after, expected, check_dtype=False)
        assert r["rows_deleted"] == len(before[name]) - len(expected)
    sc = by_table["scores"]
    assert sc["rows_deleted"] == 2 * BATCHES * ROWS
    assert sc["files_compacted"] == 4 * BATCHES and sc["partitions_compacted"] == 4
    assert (_files(s, "scores") == 1).all() and (_files(s, "quarantine") == 1).all()
    assert _files(s, "scores").sum() < files["scores"].sum()
    # scores and labels: not vacuumed before the labels refresh has read past the delete
    assert sc["vacuum_skipped"] and by_table["labels"]["vacuum_skipped"]
    assert by_table["quarantine"]["files_vacuumed"] == DAYS * BATCHES  # every file deleted or replaced

    with prefect_api(s):
        again = maintain_flow(overrides=overrides_of(s), now_ms=NOW)
    for r in again["tables"]:  # a replay: nothing to do, nothing committed
        assert r["version_after"] == r["version_before"], r
        assert r["rows_deleted"] == r["files_compacted"] == r["files_vacuumed"] == 0, r

    # the labels refresh reads its change data across the compaction and the delete
    labelled = _rows(s, "labelled")
    refreshed = refresh_labelled(s, SPEC, now_ms=NOW)
    assert refreshed["new_scored"] == 0 and refreshed["new_labels"] == 0
    pd.testing.assert_frame_equal(_rows(s, "labelled"), labelled)

    # by hand, on the wall clock: a retention of 3 days today is clamped to the event-time guard
    env = settings_env(s) | {
        "RTML_MAINTENANCE__RETENTION_DAYS__QUARANTINE": "3",
        "RTML_MAINTENANCE__VACUUM_RETAIN_HOURS": "0",
        "RTML_RETRAIN__SLIDING_WINDOW": "1d",
        "RTML_DRIFT__PERFORMANCE_WINDOW": "1d",
    }
    code, plan, err = rtml("maintain", "--json", "--dry-run", env=env)
    assert code == 0, err
    dry = {t["table"]: t for t in plan["tables"]}
    assert plan["dry_run"] and dry["quarantine"]["partitions_deleted"] == 1
    assert dry["scores"]["files_vacuumed"] == 2 * BATCHES + 4 * BATCHES  # the first run's, now read
    code, res, err = rtml("maintain", "--json", env=env)
    assert code == 0, err
    cli = {t["table"]: t for t in res["tables"]}
    q = cli["quarantine"]
    assert q["clamped"]["by"] == "label_horizon" and q["delete_before"] == _day(3)
    assert len(res["warnings"]) == 1 and "clamped" in res["warnings"][0]
    assert q["rows_deleted"] == BATCHES == dry["quarantine"]["rows_deleted"]
    assert sorted(_rows(s, "quarantine")["event_date"].unique()) == [_day(d) for d in range(3, DAYS)]
    for name in ("scores", "labels"):  # the refresh read past the first run's commits: vacuumed now
        assert cli[name]["vacuum_skipped"] is None and cli[name]["files_vacuumed"] == 6 * BATCHES, cli[name]
        assert cli[name]["delete_before"] is None and cli[name]["rows_deleted"] == 0


def test_appends_while_a_compaction_or_a_delete_is_in_flight_are_kept(tmp_path: Path) -> None:
    """delta-rs 1.6.6: an optimize or a delete planned on an older snapshot commits on top of the
    scoring job's newer appends (optimistic concurrency: no conflict, no appended row lost)."""
    from rtml.infra.config.settings import load_settings

    s = load_settings(overrides={"state_dir": str(tmp_path)}, use_default_file=False)

    def batch(i: int, day: int) -> pa.Table:
        t = D0 + day * DAY + i * 1000 + np.arange(10)
        return pa.table({ID: [f"b{i}-{j}" for j in range(10)], "score": np.zeros(10), "_event_ms": t})

    for i in range(6):
        commit_batch(s, "scores", batch(i, i % 2), "q", i)  # days 0 and 1, three small files each
    planned = open_table(s, "scores")  # the maintenance's snapshot
    commit_batch(s, "scores", batch(6, 1), "q", 6)  # the scoring job appends meanwhile
    metrics = planned.optimize.compact(partition_filters=[("event_date", "in", [_day(1)])])
    assert metrics["numFilesRemoved"] == 3  # only the planned files; the new one stays as it is
    planned = open_table(s, "scores")
    commit_batch(s, "scores", batch(7, 2), "q", 7)
    assert planned.delete(f"event_date < '{_day(1)}'")["num_deleted_rows"] == 30
    rows = open_table(s, "scores").to_pandas()
    assert sorted(rows["batch_id"].unique()) == [1, 3, 5, 6, 7] and len(rows) == 50
    assert rows[ID].is_unique


def test_maintain_and_labels_runs_started_together_leave_a_consistent_table(stack, tmp_path: Path) -> None:
    """The labelled table's maintenance and its refresh share the labels flow's concurrency limit:
    started at the same moment, five times, no run fails and the table equals a from-scratch join."""
    import contextvars
    import threading

    from rtml.flows.labels import labels_flow
    from tests.unit.test_labelled import T0, _from_scratch, _labelled, _labels, _scores

    s = scoped_settings(stack, tmp_path, maintenance={"vacuum_retain_hours": 0})
    errors: list[BaseException] = []

    def run(flow) -> None:  # noqa: ANN001
        try:
            flow(overrides=overrides_of(s))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with prefect_api(s):
        for r in range(5):
            for b in range(4):  # small commits for the compaction to find
                lo = r * 80 + b * 20
                commit_batch(s, "scores", _scores(lo, lo + 20), "q-scores", r * 4 + b)
                append(s, "labels", _labels([lo, lo + 2], 1, T0 + lo), {INGEST_APP: r * 4 + b + 1})
            ctx = contextvars.copy_context
            threads = [
                threading.Thread(target=ctx().run, args=(run, f))
                for f in (maintain_flow, labels_flow, maintain_flow)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
            assert not errors, errors
            labels_flow(overrides=overrides_of(s))  # caught up after the round
            got, expected = _labelled(s), _from_scratch(s, T0 + ((r + 1) * 80 - 1) * 360_000)
            assert len(got) == len(expected) > 0
            pd.testing.assert_series_equal(got, expected, check_names=False)
    assert (_files(s, "scores") == 1).all()  # compacted by the last round's runs
