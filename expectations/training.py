"""Retrain gate: a training batch that fails its suite is quarantined, alerted on, never trained on.

The quarantined batch is kept (never deleted) under ``<sink_root>/quarantine_training/<id>/``:
``batch.parquet`` (the rows), ``summary.json`` (which expectations failed) and
``validation_result.json`` (GE's full result). Event ids quarantined there are left out of every
later labelled window (:func:`quarantined_ids`), and a batch file given to ``rtml retrain --batch``
is moved there.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from rtml.expectations.gate import GateResult, publish, validate
from rtml.infra.config.spec import StreamSpec


class QualityGateFailed(RuntimeError):
    """The training batch failed its expectations; the message names them and the quarantine path."""


def quarantine_root(settings: Any) -> Path:
    return settings.sink_root / "quarantine_training"


def check_training_batch(
    settings: Any,
    spec: StreamSpec,
    frame: pd.DataFrame,
    reference: dict | None,
    tags: dict[str, str],
    champion: Any = None,
) -> GateResult:
    """Validate the whole window (train + holdout) and publish the result to MLflow / Prefect.

    ``champion`` (the loaded champion model) scores the rows for the label-consistency expectation.
    """
    result = validate(frame, "training_batch", spec, settings, reference, champion=champion)
    return publish(result, settings, tags)


def quarantine_batch(
    settings: Any, frame: pd.DataFrame, result: GateResult, source_file: Path | None = None
) -> dict[str, Any]:
    """Move the failing batch to the quarantine location; returns where and how many rows."""
    dest = quarantine_root(settings) / f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}"
    dest.mkdir(parents=True)
    frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(
        dest / "batch.parquet", index=False
    )
    (dest / "validation_result.json").write_text(json.dumps(result.result_json))
    if source_file is not None:
        shutil.move(str(source_file), dest / Path(source_file).name)
    info = {
        "path": str(dest),
        "rows": int(len(frame)),
        "source_file": str(source_file) if source_file else None,
    }
    (dest / "summary.json").write_text(json.dumps({**result.summary(), "quarantine": info}, indent=2))
    return info


def quarantined_ids(settings: Any, event_id: str) -> set[str]:
    """Event ids of every quarantined training batch (excluded from later windows)."""
    root = quarantine_root(settings)
    ids: set[str] = set()
    for path in sorted(root.glob("*/batch.parquet")) if root.exists() else []:
        ids.update(pd.read_parquet(path, columns=[event_id])[event_id].astype(str))
    return ids


def failure_message(result: GateResult, quarantine: dict[str, Any]) -> str:
    failed = "; ".join(f.describe() for f in result.failures)
    return (
        f"training batch failed data-quality suite '{result.suite}': {failed}"
        f" -- {quarantine['rows']} rows quarantined at {quarantine['path']}; champion unchanged"
    )
