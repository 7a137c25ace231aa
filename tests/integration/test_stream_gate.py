"""Stream gate on the real scoring job: sampled micro-batches validated with GE, failures reported."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.registry import client
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from tests.helpers import RTML, read_topic, scoped_settings, settings_env

pytestmark = pytest.mark.integration
UNIQUE_ID = "expect_column_values_to_be_unique(transaction_id)"


def test_stream_gate_passes_clean_batches_and_flags_duplicated_ids(stack, tmp_path: Path) -> None:
    s = scoped_settings(  # de-duplication off: the gate is what must see the repeated ids here
        stack,
        tmp_path,
        quality={"stream_every_batches": 1},
        spark={"max_events_per_trigger": 1000},
        scoring={"dedup_horizon_seconds": 0},
    )
    spec = load_spec()
    bootstrap(s, spec, n=8000)
    stream_frames(s, spec, generated_frames(spec, 2000, 41, None, 1000), seed=41)

    clean = run_scoring(s, spec, available_now=True)
    assert clean["scored"] == 2000
    assert clean["quality"]["checked"] == clean["batches"] >= 2
    assert clean["quality"]["passed"] == clean["quality"]["checked"] and clean["quality"]["failed"] == 0

    # every event valid on its own, but each id twice in one micro-batch: only a batch check sees it
    once = next(generated_frames(spec, 400, 42, None, 400))
    stream_frames(s, spec, iter([pd.concat([once, once], ignore_index=True)]), seed=42)
    dup = run_scoring(s, spec, available_now=True)

    assert dup["read"] == dup["scored"] == 800  # the gate reports; row-level validation decides scoring
    q = dup["quality"]
    assert q["checked"] == clean["batches"] + dup["batches"] and q["failed"] == 1
    [(batch_id, failed)] = q["failed_batches"].items()
    assert any(f.startswith(UNIQUE_ID) for f in failed)
    record = json.loads((s.sink_root / "_quality" / f"batch_id={int(batch_id):09d}.json").read_text())
    assert record["passed"] is False and record["rows"] == 800 and record["alerted"] is True

    alerts = [json.loads(r.value) for r in read_topic(s, s.kafka.topics.alerts)]
    assert len(alerts) == 1 and alerts[0]["event"] == "rtml.quality.failed"
    assert alerts[0]["payload"]["gate"] == "stream" and UNIQUE_ID in alerts[0]["payload"]["failed"]
    assert alerts[0]["resource"]["rtml.model.version"] == "1"
    run = client(s).get_run(record["mlflow_run_id"])
    assert run.data.tags["rtml.gate"] == "stream" and run.data.tags["rtml.quality.passed"] == "False"
    names = {a.path for a in client(s).list_artifacts(run.info.run_id, "quality/raw_events")}
    assert "quality/raw_events/data_docs.html" in names

    # the same sink by hand: the window holds the duplicated ids, so the suite fails and names them
    proc = subprocess.run(
        [RTML, "validate", "--window", "1h", "--suite", "raw_events", "--json"],
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["rows"] == 2800 and [f.split(":")[0] for f in report["failed"]] == [UNIQUE_ID]
