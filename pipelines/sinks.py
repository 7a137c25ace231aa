"""Read back what the scoring job wrote: the Parquet score and quarantine sinks.

>>> from rtml.infra.config.settings import load_settings
>>> s = load_settings(overrides={"state_dir": "/nonexistent"}, use_default_file=False)
>>> read_sink(s, "scores").empty
True
"""

from __future__ import annotations

from typing import Any

import pandas as pd

TIME_COLUMN = {"scores": "scored_at_ms", "quarantine": "quarantined_at_ms"}


def read_sink(
    settings: Any, kind: str = "scores", since_ms: int | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """Rows of one sink, optionally only those written at or after ``since_ms`` (processing time).

    Row groups are pruned by their statistics, so a short recent window does not read the history.
    """
    import pyarrow.dataset as ds

    root = settings.sink_root / kind
    if not root.exists() or not any(root.rglob("*.parquet")):
        return pd.DataFrame(columns=columns or [])
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    expr = ds.field(TIME_COLUMN[kind]) >= since_ms if since_ms is not None else None
    return dataset.to_table(columns=columns, filter=expr).to_pandas()


def read_scored_event(settings: Any, id_field: str, event_id: str) -> dict[str, Any] | None:
    """The score row of one event (its newest, should it have been scored twice), or None.

    Each micro-batch's file is read with its own schema (explanation columns come and go with
    ``scoring.explain_top_k``), filtered on the event id, so row groups that cannot hold it are skipped.
    """
    import pyarrow.dataset as ds

    root = settings.sink_root / "scores"
    files = sorted(root.glob("batch_id=*/*.parquet"), reverse=True) if root.exists() else []
    for path in files:
        table = ds.dataset(path, format="parquet").to_table(filter=ds.field(id_field) == event_id)
        if table.num_rows:
            row = table.slice(table.num_rows - 1).to_pylist()[0]
            return {**row, "batch": path.parent.name}
    return None
