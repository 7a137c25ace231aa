"""Maintenance benchmark: one day of new micro-batches over short and long history. JSON lines.

For each history length (days) a ``scores`` table gets one compacted file per history day, then one
new day of ``--batches`` micro-batches (one small file each, through the scoring job's writer), then
one maintenance run (compaction, retention with a retention far back, vacuum). Reports the run's wall
time and what it did: the cost should follow the new day, not the history.

    python benchmarks/maintain.py [--days 30,300] [--batches 200] [--rows 500] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.infra.config.settings import load_settings  # noqa: E402
from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.pipelines.maintenance import maintain  # noqa: E402
from rtml.pipelines.tables import commit_batch  # noqa: E402

DAY = 86_400_000
END_MS = 1_764_547_200_000  # 2025-12-01T00:00Z: the new day starts here


def _batch(spec, start_ms: int, n: int, tag: str, step_ms: int) -> pa.Table:  # noqa: ANN001
    t = start_ms + np.arange(n, dtype="int64") * step_ms
    return pa.table(
        {
            spec.event_id: [f"{tag}-{i}" for i in range(n)],
            "score": np.random.default_rng(0).random(n),
            "decision": np.zeros(n, dtype="int64"),
            "scored_at_ms": t,
            "_event_ms": t,
        }
    )


def run(root: Path, days: int, batches: int, rows: int) -> dict:
    s = load_settings(overrides={"state_dir": str(root)}, use_default_file=False)
    spec = load_spec()
    for d in range(days):  # history: one (already compacted) file per day
        start = END_MS - (days - d) * DAY
        commit_batch(s, "scores", _batch(spec, start, rows * 10, f"h{d}", DAY // (rows * 10)), "q", d)
    for b in range(batches):  # the new day: many small micro-batches
        start = END_MS + b * (DAY // batches)
        commit_batch(s, "scores", _batch(spec, start, rows, f"n{b}", 1000), "q", days + b)
    s.maintenance.retention_days.scores = days + 30  # retention set, nothing old enough to go
    t0 = time.perf_counter()
    out = maintain(s, spec, END_MS + DAY, tables=("scores",))
    wall = time.perf_counter() - t0
    r = out["tables"][0]
    return {
        "history_days": days,
        "new_batches": batches,
        "wall_s": round(wall, 2),
        "files_compacted": r["files_compacted"],
        "partitions_compacted": r["partitions_compacted"],
        "rows_deleted": r["rows_deleted"],
        "files_vacuumed": r["files_vacuumed"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", default="30,300")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    base = Path(a.dir or tempfile.mkdtemp(prefix="rtml-maintain-bench-"))
    for days in (int(x) for x in a.days.split(",")):
        print(json.dumps(run(base / f"d{days}", days, a.batches, a.rows)), flush=True)


if __name__ == "__main__":
    main()
