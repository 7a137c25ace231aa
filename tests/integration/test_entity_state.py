"""Per-entity state on the real job: backlog aggregates equal a from-scratch reference; duplicates once.

A backlog is what a catching-up job (or ``rtml replay``) reads: one micro-batch that spans many hours
of event time across the topic's partitions. The state function receives a bucket's rows in chunks,
one partition after another, so a chunk's newest time says nothing about the next chunk's cards.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rtml.features.featurise import featurise_history
from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.spec import load_spec
from rtml.pipelines.generator import CardTransactionGenerator, to_event_frame
from rtml.pipelines.keyed_state import query_partitions
from rtml.pipelines.producer import stream_frames
from rtml.pipelines.score_job import run_scoring
from rtml.pipelines.scoring import read_batch_records
from tests.helpers import scoped_settings, sink_frame

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000


def _reference(frames: list[pd.DataFrame], spec) -> pd.DataFrame:  # noqa: ANN001
    """Aggregates computed from scratch over every distinct event, indexed by event id."""
    events = pd.concat([to_event_frame(f.copy(), spec) for f in frames], ignore_index=True)
    return featurise_history(events, spec).set_index(spec.event_id)


def _short(scores: pd.DataFrame, ref: pd.DataFrame, names: list[str]) -> dict[str, float]:
    got = scores.set_index(load_spec().event_id).loc[ref.index]
    return {n: round(float((ref[n] - got[n]).clip(lower=0).sum()), 2) for n in names}


@pytest.mark.parametrize("store", ["spark", "sqlite", "postgres"])
def test_backlog_aggregates_equal_reference_and_duplicates_count_once(
    stack, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_state_url") if store == "postgres" else None
    s = scoped_settings(
        stack,
        tmp_path,
        scoring={"state_store": store, "state_url": url},
        # two buckets, and Arrow chunks of 2,500 rows: each bucket reaches the state function in
        # several chunks, one Kafka partition after another, as a 50k-event backlog batch does at
        # the default 10,000-row chunks; two shuffle partitions: the keyed stores group by labels
        # that put each bucket in a task of its own (``bucket_labels``), the stores keep the numbers
        spark={
            "entity_buckets": 2,
            "shuffle_partitions": 2,
            "conf": {"spark.sql.execution.arrow.maxRecordsPerBatch": "2500"},
        },
    )
    spec = load_spec()
    names = spec.aggregate_names
    bootstrap(s, spec, n=8000)
    now = int(time.time() * 1000)
    gen = CardTransactionGenerator(
        seed=61, n_cards=60, events_per_sim_second=0.09, start_ms=now - 40 * HOUR_MS
    )
    backlog = [gen.batch(2000, end_ms=now) for _ in range(6)]  # 12,000 events over ≈37 h
    span_h = (backlog[-1]["event_time_ms"].max() - backlog[0]["event_time_ms"].min()) / HOUR_MS
    assert span_h > 30
    stream_frames(s, spec, iter(backlog), seed=61)

    first = run_scoring(s, spec, available_now=True)
    assert first["read"] == first["scored"] == 12_000 and first["batches"] == 1  # one batch, ≈37 h
    marks = {"spark": "state", "sqlite": "entity_state", "postgres": "entity_state_postgres"}
    kept = [m for m in marks.values() if (s.checkpoint_root / "scoring" / m).exists()]
    assert kept == [marks[store]]  # the state is in the store under test
    assert query_partitions(s.checkpoint_root / "scoring", 99) == 2  # read from Spark's offset log
    if store == "sqlite":  # one file per bucket number (Spark grouped by the labels 2 and 0)
        files = sorted(p.name for p in (s.checkpoint_root / "scoring" / marks[store]).glob("*.sqlite"))
        assert files == ["bucket-0000.sqlite", "bucket-0001.sqlite"]
    [record] = read_batch_records(s)
    assert record["duplicates"] == 0
    scores = sink_frame(s, "scores")
    assert set(scores["partition"]) == set(range(s.kafka.partitions)) and s.kafka.partitions >= 2
    ref = _reference(backlog, spec)
    assert ref["card_id_count_24h"].max() > 150  # windows hold many events per card
    assert _short(scores, ref, names) == dict.fromkeys(names, 0)
    got = scores.set_index(spec.event_id).loc[ref.index]
    for n in names:
        assert np.allclose(got[n].to_numpy(), ref[n].to_numpy(), atol=1e-6), n

    # re-sent events: 300 of the backlog's last 20 h (a later run, from the state), and 100 of 500
    # new events twice in the same micro-batch
    everything = pd.concat(backlog, ignore_index=True)
    recent = everything[everything["event_time_ms"] > everything["event_time_ms"].max() - 20 * HOUR_MS]
    resent = recent.sample(300, random_state=1)
    new = gen.batch(500, end_ms=int(time.time() * 1000))
    stream_frames(s, spec, iter([resent, pd.concat([new, new.iloc[:100]], ignore_index=True)]), seed=62)

    second = run_scoring(s, spec, available_now=True)
    assert second["read"] == 900 and second["scored"] == 500
    assert second["duplicates"] == 400 and second["quarantined"] == 0
    records = read_batch_records(s)
    assert all(r["read"] == r["scored"] + r["quarantined"] + r["duplicates"] for r in records)
    assert sum(r["duplicates"] for r in records) == 400 and not any(r["by_reason"] for r in records)

    scores = sink_frame(s, "scores")
    assert scores[spec.event_id].is_unique and len(scores) == 12_500  # each event scored once
    ref = _reference([*backlog, new], spec)
    assert _short(scores, ref, names) == dict.fromkeys(names, 0)
    got = scores.set_index(spec.event_id).loc[ref.index]
    for n in names:  # copies counted nowhere: the new events' windows equal the reference
        assert np.allclose(got[n].to_numpy(), ref[n].to_numpy(), atol=1e-6), n
    quarantine = sink_frame(s, "quarantine")
    assert len(quarantine) == 400 and set(quarantine["reason"]) == {"duplicate_event"}


def test_a_checkpoint_restored_without_its_state_fails_in_one_line_and_writes_nothing(
    stack, tmp_path: Path
) -> None:
    s = scoped_settings(stack, tmp_path, spark={"max_events_per_trigger": 400})
    spec = load_spec()
    bootstrap(s, spec, n=3000)
    now = int(time.time() * 1000)
    gen = CardTransactionGenerator(seed=62, n_cards=20, events_per_sim_second=1.0, start_ms=now - HOUR_MS)
    stream_frames(s, spec, iter([gen.batch(1200, end_ms=now)]), seed=62)
    first = run_scoring(s, spec, available_now=True)
    assert first["batches"] == 3 and first["scored"] == 1200
    assert (s.checkpoint_root / "scoring" / "entity_state").exists()  # the keyed (sqlite) store

    # an operator restores the checkpoint as it was after batch 0, without the state that batch 2 wrote
    for batch in ("1", "2"):
        for kind in ("offsets", "commits"):
            for name in (batch, f".{batch}.crc"):
                (s.checkpoint_root / "scoring" / kind / name).unlink(missing_ok=True)
    scores_before = len(sink_frame(s, "scores"))
    with pytest.raises(RuntimeError) as failed:
        run_scoring(s, spec, available_now=True)
    line = str(failed.value)
    assert "\n" not in line and "Traceback" not in line, line[:2000]
    assert line.startswith("scoring query failed: entity state ") and "holds micro-batch 2" in line
    assert line.endswith("restore both or start both afresh")
    assert len(sink_frame(s, "scores")) == scores_before  # the replay wrote no scores
