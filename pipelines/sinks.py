"""Read back what the scoring job wrote: the score and quarantine Delta tables.

>>> from rtml.infra.config.settings import load_settings
>>> s = load_settings(overrides={"state_dir": "/nonexistent"}, use_default_file=False)
>>> read_sink(s, "scores").empty
True
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from rtml.pipelines.tables import DATE, open_table, query, read_table

TIME_COLUMN = {"scores": "scored_at_ms", "quarantine": "quarantined_at_ms"}


def read_sink(
    settings: Any, kind: str = "scores", since_ms: int | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """Rows of one sink table, optionally only those written at or after ``since_ms`` (processing time).

    Files are pruned by the per-file statistics in the Delta log, so a short recent window does not
    read the history.
    """
    where = f"{TIME_COLUMN[kind]} >= {int(since_ms)}" if since_ms is not None else None
    return read_table(settings, kind, where, columns=columns)


def read_scored_event(settings: Any, id_field: str, event_id: str) -> dict[str, Any] | None:
    """The score row of one event (its newest, should it have been scored twice), or None."""
    dt = open_table(settings, "scores")
    if dt is None:
        return None
    quoted = event_id.replace("'", "''")
    rows = query(dt, f"\"{id_field}\" = '{quoted}'").to_pylist()
    if not rows:
        return None
    row = max(rows, key=lambda r: r["batch_id"])
    row.pop(DATE, None)
    return {**row, "batch": f"batch_id={int(row['batch_id']):09d}"}
