"""Retention with a fake clock: nothing inside the label horizon, a retrain window, a drift window or
still waiting for its label is deleted; older partitions are; a retention shorter than that guard is
clamped to it and reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rtml.infra.config.settings import load_settings
from rtml.infra.config.spec import load_spec
from rtml.pipelines.labelled import refresh_labelled
from rtml.pipelines.labels import INGEST_APP
from rtml.pipelines.maintenance import TABLES, compute_guard, maintain, maintain_table, table_guard
from rtml.pipelines.tables import append, commit_batch, open_table

DAY = 86_400_000
D0 = 1_764_028_800_000  # 2025-11-25 00:00 UTC
SPEC = load_spec()  # label horizon 2d
ID, LABEL = SPEC.event_id, SPEC.label.field
NOW = D0 + 20 * DAY + 12 * 3_600_000  # the fake clock: day 20, noon
SHORT = {"retrain": {"sliding_window": "1d"}, "drift": {"performance_window": "1d"}}


def _settings(tmp_path: Path, retention: int | None = None, **sections):  # noqa: ANN202
    days = {t: retention for t in ("scores", "quarantine", "labels", "labelled")}
    over = {"state_dir": str(tmp_path), "maintenance": {"retention_days": days, "vacuum_retain_hours": 0}}
    return load_settings(overrides={**over, **sections}, use_default_file=False)


def _day(i: int) -> str:
    return pd.to_datetime(D0 + i * DAY, unit="ms", utc=True).strftime("%Y-%m-%d")


def _scores(day: int, n: int = 10) -> pa.Table:
    """n scored events on day ``day`` (10:00 to 11:30)."""
    t = D0 + day * DAY + 10 * 3_600_000 + np.arange(n) * 600_000
    return pa.table(
        {
            ID: [f"d{day}-{i}" for i in range(n)],
            "score": np.linspace(0, 1, n),
            "decision": np.zeros(n, dtype="int64"),
            "scored_at_ms": t,
            "_event_ms": t,
        }
    )


def _history(s, days: int = 20, refresh_at: int | None = NOW) -> None:  # noqa: ANN001
    """One scored batch a day for ``days`` days, a fraud label for the first event of each, the
    labelled table refreshed at ``refresh_at`` (None: not refreshed)."""
    for d in range(days):
        commit_batch(s, "scores", _scores(d), "q-scores", d)
        at = D0 + d * DAY + 10 * 3_600_000
        commit_batch(
            s, "quarantine", pa.table({"reason": ["schema"], "quarantined_at_ms": [at]}), "q-quar", d
        )
        labels = pa.table({ID: [f"d{d}-0"], LABEL: [1], "labelled_at_ms": [D0 + d * DAY + 13 * 3_600_000]})
        append(s, "labels", labels, {INGEST_APP: d + 1})
    if refresh_at is not None:
        refresh_labelled(s, SPEC, now_ms=refresh_at)


def _dates(s, name: str) -> list[str]:  # noqa: ANN001
    dt = open_table(s, name)
    return sorted(set(dt.to_pandas(columns=["event_date"])["event_date"]))


def test_guard_is_the_earliest_need_on_the_fake_clock(tmp_path: Path) -> None:
    s = _settings(tmp_path, drift={"performance_window": "3d"}, retrain={"sliding_window": "2d"})
    g = compute_guard(s, SPEC, NOW, newest_event_ms=NOW - DAY)
    assert g.needs["label_horizon"] == NOW - 3 * DAY  # event time: the newest event minus 2d
    assert g.needs["retrain_window"] == NOW - 2 * DAY
    assert g.needs["drift_performance_window"] == NOW - 3 * DAY
    assert g.needs["drift_window"] == NOW - 15 * 60_000
    assert g.keep_from_ms == NOW - 3 * DAY
    # the event-time clock never runs ahead of the wall clock
    assert compute_guard(s, SPEC, NOW, newest_event_ms=NOW + 9 * DAY).needs["label_horizon"] == NOW - 2 * DAY
    assert compute_guard(s, SPEC, NOW, watermark_ms=NOW - 9 * DAY).by == "retrain_watermark"
    assert compute_guard(s, SPEC, NOW, oldest_pending_ms=NOW - 8 * DAY).by == "pending_labels"


def test_no_retention_setting_deletes_nothing(tmp_path: Path) -> None:
    s = _settings(tmp_path, None, **SHORT)
    _history(s)
    out = maintain(s, SPEC, NOW)
    assert [t["table"] for t in out["tables"]] == ["scores", "quarantine", "labels", "labelled"]
    for t in out["tables"]:
        assert t["rows_deleted"] == t["partitions_deleted"] == 0 and t["delete_before"] is None
    assert len(_dates(s, "scores")) == 20 and len(_dates(s, "labelled")) == 20


@pytest.mark.parametrize(
    ("sections", "by", "kept_from_day"),
    [
        (SHORT, "label_horizon", 17),  # the newest event (day 19, 11:30) - 2d
        ({"retrain": {"sliding_window": "6d"}, "drift": {"performance_window": "1d"}}, "retrain_window", 14),
        (
            {"retrain": {"sliding_window": "1d"}, "drift": {"performance_window": "9d"}},
            "drift_performance_window",
            11,
        ),
    ],
)
def test_a_short_retention_is_clamped_to_the_guard_and_reported(
    tmp_path: Path, sections: dict, by: str, kept_from_day: int
) -> None:
    s = _settings(tmp_path, 1, **sections)
    _history(s)
    out = maintain(s, SPEC, NOW)
    assert out["guard"]["by"] == by
    kept = out["guard"]["keep_from"]
    assert kept == _day(kept_from_day)
    for t in out["tables"]:
        assert t["clamped"]["by"] == by and t["clamped"]["kept_from"] == kept, t
        assert t["delete_before"] == kept
    assert len(out["warnings"]) == 4 and by in out["warnings"][0]
    # every partition from the guard's day on is there, whole; every older one is gone
    for name in TABLES:
        assert _dates(s, name) == [_day(d) for d in range(kept_from_day, 20)], name
    scores = open_table(s, "scores").to_pandas()
    assert len(scores) == 10 * (20 - kept_from_day)
    assert scores["_event_ms"].min() == D0 + kept_from_day * DAY + 10 * 3_600_000


def test_a_long_retention_deletes_only_what_is_older(tmp_path: Path) -> None:
    s = _settings(tmp_path, 10, **SHORT)
    _history(s)
    out = maintain(s, SPEC, NOW)
    assert not out["warnings"]
    scores = {t["table"]: t for t in out["tables"]}["scores"]
    assert scores["delete_before"] == _day(10) and scores["partitions_deleted"] == 10
    assert scores["rows_deleted"] == 100 and _dates(s, "scores")[0] == _day(10)


def test_pending_labels_are_never_deleted(tmp_path: Path) -> None:
    """The labelled table last refreshed on day 5 (noon): events from day 3, noon on still wait for
    their labels (the newest scored event of day 5 minus the 2d horizon); day 4 is the first with any."""
    s = _settings(tmp_path, 1, **SHORT)
    _history(s, refresh_at=D0 + 5 * DAY + 12 * 3_600_000)
    guard = table_guard(s, SPEC, NOW)
    assert guard.by == "pending_labels" and guard.payload()["keep_from"] == _day(4)
    out = maintain(s, SPEC, NOW)
    assert _dates(s, "labelled")[0] == _day(4) and _dates(s, "scores")[0] == _day(4)
    assert all(t["clamped"]["by"] == "pending_labels" for t in out["tables"])


def test_dry_run_changes_nothing_and_a_replay_is_a_no_op(tmp_path: Path) -> None:
    s = _settings(tmp_path, 10, **SHORT)
    _history(s)
    plan = maintain(s, SPEC, NOW, dry_run=True)
    assert all(t["version_before"] == t["version_after"] for t in plan["tables"])
    first = maintain(s, SPEC, NOW)
    for p, f in zip(plan["tables"], first["tables"], strict=True):
        assert (p["partitions_deleted"], p["rows_deleted"]) == (f["partitions_deleted"], f["rows_deleted"])
        assert p["files_compacted"] == f["files_compacted"]
    again = maintain(s, SPEC, NOW)
    for t in again["tables"]:
        assert t["version_before"] == t["version_after"], t
        assert t["rows_deleted"] == t["files_compacted"] == t["files_vacuumed"] == 0, t


def test_absent_table_is_skipped(tmp_path: Path) -> None:
    s = _settings(tmp_path, 1)
    g = compute_guard(s, SPEC, NOW)
    assert maintain_table(s, "quarantine", g, NOW) == {"table": "quarantine", "skipped": "not written yet"}
