"""Labelled history to bootstrap from: a CSV/Parquet file matching the spec, or generated events."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.spec import StreamSpec
from rtml.models.training.bootstrap import BootstrapError
from rtml.pipelines.generator import CardTransactionGenerator


def history_frame(spec: StreamSpec, n: int, seed: int, from_file: Path | None) -> pd.DataFrame:
    """Labelled history: from a CSV/Parquet file matching the spec, or generated card transactions."""
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
    gen.start_ms = int(time.time() * 1000) - 4 * 86_400_000  # history ends days before the live stream
    frame = gen.batch(n).rename(columns={"event_time_ms": EVENT_MS})
    return frame
