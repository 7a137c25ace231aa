"""Labelled history to bootstrap from: a CSV/Parquet file matching the spec, or generated events."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.spec import StreamSpec
from rtml.models.training.bootstrap import BootstrapError
from rtml.pipelines.generator import CardTransactionGenerator


def history_frame(
    spec: StreamSpec, n: int, seed: int, from_file: Path | None, now_ms: int | None = None
) -> pd.DataFrame:
    """Labelled history: from a CSV/Parquet file matching the spec, or generated card transactions
    (placed relative to ``now_ms``, default the clock)."""
    if from_file is not None:
        data = pd.read_parquet(from_file) if from_file.suffix == ".parquet" else pd.read_csv(from_file)
        need = [*spec.event_fields, spec.label.field] if spec.label else spec.event_fields
        missing = [c for c in need if c not in data.columns]
        if missing:
            raise BootstrapError(f"{from_file}: missing column(s) {', '.join(missing)}")
        return data
    if spec.name != "card_transactions":
        raise BootstrapError(
            f"spec '{spec.name}': no built-in generator; pass --from FILE with labelled history"
        )
    gen = CardTransactionGenerator(seed=seed)
    # the history ends 4 days before now, so it covers the hours of the day just before now: a live
    # stream generated now (placed to end about now) meets the reference at the same time of day
    # (fraud prefers the night: a history starting 4 days ago at 23:00 is mostly night, a stream at
    # 23:00 is not, and a stationary stream looked like prediction drift)
    span_ms = int(n / gen.events_per_sim_second * 1000)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    gen.start_ms = now - 4 * 86_400_000 - span_ms
    frame = gen.batch(n).rename(columns={"event_time_ms": EVENT_MS})
    return frame
