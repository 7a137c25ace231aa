"""Outbox recovery of undelivered Kafka output, and entity pseudonymisation (scores and quarantine) through
the real job."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.spec import load_spec
from rtml.pipelines.outbox import KafkaOutbox
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.quarantine import decrypt_payload
from rtml.pipelines.score_job import run_scoring
from rtml.pipelines.tables import commit_batch
from tests.helpers import read_topic, scoped_settings, sink_frame

pytestmark = pytest.mark.integration


def test_outbox_resends_batches_left_undelivered(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path)
    spec = load_spec()
    scored = pa.table(
        {
            spec.event_id: ["e1", "e2", "e3"],
            spec.event_time: ["t"] * 3,
            "score": [0.1, 0.2, 0.9],
            "decision": [0, 0, 1],
            "model_version": ["4"] * 3,
            "scored_at_ms": [1, 2, 3],
            "_event_ms": [1, 2, 3],
        }
    )
    commit_batch(s, "scores", scored, "q", 7)  # a crash before delivery
    commit_batch(s, "scores", scored, "q", 8)
    (s.sink_root / "_kafka_delivered").mkdir(parents=True)
    (s.sink_root / "_kafka_delivered" / "batch_id=000000008").touch()
    outbox = KafkaOutbox(s, spec)
    try:
        assert outbox.recover() == ["batch_id=000000007"]
    finally:
        outbox.close()
    records = read_topic(s, s.kafka.topics.scores)
    assert sorted(r.key.decode() for r in records) == ["e1", "e2", "e3"]
    assert json.loads(records[0].value)["model_version"] == "4"
    assert (s.sink_root / "_kafka_delivered" / "batch_id=000000007").exists()


def _hits(data: bytes | str, needle: str) -> bool:
    return needle.encode() in data if isinstance(data, bytes) else needle in data


def _files_holding(root: Path, needle: str) -> list[Path]:
    """Files under root holding needle: Parquet cell by cell (it compresses), other files byte by byte."""
    import pyarrow.parquet as pq

    out = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            cells = [str(v) for col in pq.read_table(path).columns for v in col.to_pylist()]
            if any(needle in c for c in cells):
                out.append(path)
        elif _hits(path.read_bytes(), needle):
            out.append(path)
    return out


def test_pseudonymised_entities_never_reach_the_sinks(stack, tmp_path: Path) -> None:
    """No raw entity id, valid or quarantined event, in rtml's sinks, topics, logs, state or MLflow."""
    secret = "s3cret-pseudonym-key"
    raw_mark = "pan7731"  # every card id of this test holds it; no other test's data does
    s = scoped_settings(stack, tmp_path, scoring={"pseudonymise_entities": True, "pseudonym_key": secret})
    spec = load_spec()
    bootstrap(s, spec, n=5000)
    frames = [
        f.assign(**{spec.entity_key: f[spec.entity_key].str.replace("card_", f"card_{raw_mark}_")})
        for f in generated_frames(spec, 1500, 51, None, 1500)
    ]
    produced = stream_frames(s, spec, iter(frames), malformed_rate=0.12, seed=51)
    assert produced["malformed_total"] > 100
    summary = run_scoring(s, spec, available_now=True)
    assert summary["read"] == 1500 == summary["scored"] + summary["quarantined"]
    assert summary["quarantined"] == produced["malformed_total"]
    scores = sink_frame(s, "scores")
    entities = scores[spec.entity_key]
    assert entities.str.startswith("p_").all() and not entities.str.startswith("card_").any()
    assert entities.nunique() > 100  # distinct cards stay distinct
    assert scores["card_id_count_24h"].max() > 1  # aggregates still grouped per (pseudonymised) card

    # quarantine: entity replaced where the payload parses, encrypted where it does not
    q = sink_frame(s, "quarantine")
    assert len(q) == summary["quarantined"]
    assert q["reason"].notna().all() and q["partition"].notna().all() and q["offset"].notna().all()
    states = q["payload_state"].value_counts().to_dict()
    assert set(states) == {"pseudonymised", "encrypted"} and min(states.values()) >= 5, states
    pseudo = q[q["payload_state"] == "pseudonymised"]
    assert pseudo["payload"].str.contains('"p_').all() and pseudo["payload_encrypted"].isna().all()
    named = set(pseudo["payload"].str.extract(rf'"{spec.entity_key}": "(p_[0-9]+)"')[0].dropna())
    assert len(named & set(entities)) >= 3  # the same pseudonym as the card's scores: they can be joined
    enc = q[q["payload_state"] == "encrypted"]
    assert enc["payload"].isna().all() and enc["payload_b64"].isna().all()
    clear = [decrypt_payload(t, s.scoring) for t in enc["payload_encrypted"]]
    assert sum(raw_mark.encode() in c for c in clear) >= 3  # the raw payload is there, for the key holder
    for reason in ("unparseable_json", "invalid_utf8"):
        assert reason in set(enc["reason"])

    # nowhere in clear: sinks, the topics rtml writes, its logs, checkpoints and state, MLflow
    assert not _files_holding(s.state_dir, raw_mark)
    for topic in (s.kafka.topics.scores, s.kafka.topics.quarantine, s.kafka.topics.alerts):
        records = read_topic(s, topic)
        assert not [r for r in records if _hits(r.value, raw_mark) or (r.key and _hits(r.key, raw_mark))]
    q_topic = [json.loads(r.value) for r in read_topic(s, s.kafka.topics.quarantine)]
    assert len(q_topic) == len(q) and {m["payload_state"] for m in q_topic} == set(states)
    assert not _files_holding(stack.state_dir / "mlflow", raw_mark)
    assert (s.state_dir / "logs").is_dir()
    for path in s.state_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".parquet", ".log"):
            assert secret.encode() not in path.read_bytes(), path


def test_stateless_spec_scores_in_one_arrow_stage_with_pseudonyms(stack, tmp_path: Path) -> None:
    """A spec without aggregates or time features takes the mapInArrow path (no state, no shuffle)."""
    secret = "another-pseudonym-key"
    s = scoped_settings(stack, tmp_path, scoring={"pseudonymise_entities": True, "pseudonym_key": secret})
    spec = load_spec().model_copy(update={"aggregates": None, "time_features": []})
    assert spec.model_inputs and not spec.aggregate_names
    bootstrap(s, spec, n=4000)
    produced = stream_frames(
        s, spec, generated_frames(spec, 1200, 52, None, 600), malformed_rate=0.05, seed=52
    )
    summary = run_scoring(s, spec, available_now=True)
    assert summary["read"] == 1200 == summary["scored"] + summary["quarantined"]
    assert summary["quarantined"] == produced["malformed_total"] > 0
    assert summary["model_versions"] == ["1"]
    scores = sink_frame(s, "scores")
    assert len(scores) == summary["scored"] and scores[spec.event_id].is_unique
    assert scores["score"].between(0, 1).all() and "card_id_count_24h" not in scores
    assert scores[spec.entity_key].str.startswith("p_").all()
    assert len(sink_frame(s, "quarantine")) == summary["quarantined"]
