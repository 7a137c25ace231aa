"""Retraining, versioning and promotion on real MLflow, Prefect and Spark."""

from __future__ import annotations

import json
import threading

import pytest

from rtml.flows.bootstrap import bootstrap
from rtml.flows.retrain import retrain_flow
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.aliases import (
    LifecycleError,
    audit_trail,
    list_versions,
    move_champion,
    promote_manual,
    rollback,
)
from rtml.models.lifecycle.registry import CHAMPION, PREVIOUS, alias_version, client
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from tests.helpers import (
    RTML,
    afternoon_ms,
    overrides_of,
    scoped_settings,
    settings_env,
    sink_frame,
    wait_for,
)

pytestmark = pytest.mark.integration


def _scored(s) -> int:  # noqa: ANN001
    frame = sink_frame(s, "scores")
    return len(frame)


def _retrain(s, **promotion) -> dict:  # noqa: ANN001
    overrides = overrides_of(s)
    overrides["promotion"] = {**overrides.get("promotion", {}), **promotion}
    with prefect_api(s):
        return retrain_flow(overrides=overrides, trigger="manual")


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A champion trained before a drift, a live scoring job, a drifting labelled stream, one retrain."""
    tmp = tmp_path_factory.mktemp("retrain")
    s = scoped_settings(
        stack,
        tmp,
        promotion={"min_holdout": 500, "min_positives": 10},
        spark={"max_events_per_trigger": 10_000},
    )
    spec = load_spec()
    at = afternoon_ms()  # one time of day: a pre-drift chunk at 06:00-08:00 UTC was rejected as noise
    bootstrap(s, spec, n=10_000, now_ms=at)
    stop = threading.Event()
    runner = threading.Thread(target=run_scoring, args=(s, spec), kwargs={"stop": stop})
    runner.start()
    try:
        drifting = generated_frames(spec, 16_000, 41, 2_000, 2_000, start_ms=at - 8_500_000)
        stream_frames(s, spec, drifting, seed=41)
        wait_for(lambda: _scored(s) >= 15_000, 300)
        first = _retrain(s)
        stream_frames(s, spec, generated_frames(spec, 1_000, 42, 0, 1_000, start_ms=at - 500_000), seed=42)
        wait_for(lambda: sink_frame(s, "scores")["transaction_id"].str.startswith("tx-42-").sum() >= 900, 180)
    finally:
        stop.set()
        runner.join(timeout=120)
    return {"settings": s, "spec": spec, "first": first}


def test_better_challenger_is_promoted_and_the_running_job_switches(world: dict) -> None:
    s, first = world["settings"], world["first"]
    assert first["outcome"] == "promote", first
    assert first["challenger"] == "2" and first["champion_after"] == "2"
    assert alias_version(s, CHAMPION) == "2" and alias_version(s, PREVIOUS) == "1"
    rows = {r["metric"]: r for r in first["decision"]}
    assert all(rows[m]["challenger"] >= rows[m]["champion"] for m in ("precision", "recall", "f1"))
    scores = sink_frame(s, "scores")
    later = scores[scores["transaction_id"].str.startswith("tx-42-")]
    assert set(later["model_version"]) == {"2"}  # same job, no restart, new model
    assert set(scores["model_version"]) == {"1", "2"}
    # every update is a new version with lineage, window, metrics and evaluation plots
    c = client(s)
    mv = c.get_model_version(s.mlflow.model_name, "2")
    assert mv.tags["rtml.parent_version"] == "1" and mv.tags["rtml.trigger"] == "manual"
    assert mv.tags["rtml.decision"] == "promote"
    run = c.get_run(mv.run_id)
    assert run.data.metrics["holdout_f1"] > run.data.metrics["champion_holdout_f1"]
    assert int(run.data.params["window_train_rows"]) > 0 and "window_train_offsets_p0" in run.data.params
    artifacts = {a.path for a in c.list_artifacts(mv.run_id, "evaluation")}
    assert {"evaluation/decision.png", "evaluation/decision.json"} <= artifacts  # both models, one figure
    trail = audit_trail(s, "2")
    assert trail[-1]["kind"] == "auto" and trail[-1]["from"] == "1"
    assert c.get_model_version(s.mlflow.model_name, "1").tags["rtml.challenged_by.2"] == "promote"


def test_too_few_positives_decides_nothing_and_keeps_champion(world: dict) -> None:
    s = world["settings"]
    before = alias_version(s, CHAMPION)
    result = _retrain(s, min_positives=100_000)
    assert result["outcome"] == "no_decision"
    assert "positives, fewer than the minimum 100000" in result["reason"]
    assert alias_version(s, CHAMPION) == before
    mv = client(s).get_model_version(s.mlflow.model_name, result["challenger"])
    assert mv.tags["rtml.decision"] == "no_decision"  # still versioned, never an overwrite


def test_challenger_not_better_on_every_metric_is_rejected(world: dict) -> None:
    s = world["settings"]
    before = alias_version(s, CHAMPION)
    result = _retrain(s, margin=0.5, min_positives=1, min_holdout=100)  # nothing beats champion + 0.5
    assert result["outcome"] == "reject" and "not better on" in result["reason"]
    assert alias_version(s, CHAMPION) == before
    mv = client(s).get_model_version(s.mlflow.model_name, result["challenger"])
    assert mv.tags["rtml.decision"] == "reject" and mv.tags["rtml.compared_with"] == before
    # the decision table is the version's description: MLflow's version page renders the Markdown
    assert mv.description.startswith(f"**reject** v{result['challenger']} against champion v{before}")
    assert f"| metric | champion v{before} | challenger v{result['challenger']} |" in mv.description
    rows = mv.description.splitlines()[4:]
    assert {ln.split("|")[1].strip() for ln in rows} == {"precision", "recall", "f1"}


def test_manual_promotion_and_rollback_leave_an_audit_trail(world: dict) -> None:
    s, spec = world["settings"], world["spec"]
    start = alias_version(s, CHAMPION)
    out = promote_manual(s, spec, "1", "ops: compare old model on live traffic", user="alice")
    assert alias_version(s, CHAMPION) == "1" and alias_version(s, PREVIOUS) == start
    assert out["kind"] == "manual"
    rec = audit_trail(s, "1")[-1]
    assert rec["kind"] == "manual" and rec["user"] == "alice" and "live traffic" in rec["reason"]
    back = rollback(s, "undo", user="bob")
    assert back["champion"] == start and alias_version(s, CHAMPION) == start
    assert audit_trail(s, start)[-1]["kind"] == "rollback"
    with pytest.raises(LifecycleError, match="no version 999"):
        promote_manual(s, spec, "999", "nope")
    with pytest.raises(LifecycleError, match="needs --reason"):
        promote_manual(s, spec, "1", " ")
    listed = {v["version"]: v for v in list_versions(s)}
    assert CHAMPION in listed[start]["aliases"] and listed["2"]["decision"] == "promote"


def test_cli_promote_errors_are_one_line(world: dict) -> None:
    import subprocess

    env = settings_env(world["settings"])
    p = subprocess.run(
        [RTML, "promote", "999", "--reason", "x", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1 and "no version 999" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([RTML, "models", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and '"version": "2"' in p.stdout
    # two versions side by side; v2 challenged v1, so both on the same holdout
    run = {"env": env, "capture_output": True, "text": True, "timeout": 120}
    p = subprocess.run([RTML, "compare", "1", "2", "--json"], **run)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert [v["version"] for v in got["versions"]] == ["1", "2"]
    same = got["same_holdout"]
    assert (same["champion"], same["challenger"], same["outcome"]) == ("1", "2", "promote")
    assert set(same["metrics"]) == {"precision", "recall", "f1"}
    assert all(m["delta"] > 0 for m in same["metrics"].values())  # promoted: better on every metric
    p = subprocess.run([RTML, "compare", "2", "1"], **run)
    assert p.returncode == 0 and "same holdout" in p.stdout and "challenger v2" in p.stdout, p.stdout
    p = subprocess.run([RTML, "compare", "1", "999"], **run)
    assert p.returncode == 1 and "has no version 999" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_racing_promotions_leave_one_valid_champion_and_both_recorded(world: dict) -> None:
    s = world["settings"]
    n_before = {v: len(audit_trail(s, v)) for v in ("1", "2")}
    barrier = threading.Barrier(2)

    def go(version: str) -> None:
        barrier.wait()
        move_champion(s, version, kind="manual", reason=f"race {version}", user="race")

    threads = [threading.Thread(target=go, args=(v,)) for v in ("1", "2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert alias_version(s, CHAMPION) in {"1", "2"}
    for v in ("1", "2"):
        assert any(r["reason"] == f"race {v}" for r in audit_trail(s, v))
        assert len(audit_trail(s, v)) > n_before[v]


def test_two_candidates_are_judged_on_the_same_holdout_and_one_is_put_up(world: dict) -> None:
    s = world["settings"]
    before = alias_version(s, CHAMPION)
    overrides = overrides_of(s)
    overrides["retrain"] = {**overrides.get("retrain", {}), "candidates": ["continue", "fresh"]}
    overrides["promotion"] = {**overrides.get("promotion", {}), "min_positives": 1, "min_holdout": 100}
    with prefect_api(s):
        out = retrain_flow(overrides=overrides, trigger="manual")
    cands = out["candidates"]
    assert [c["candidate"] for c in cands] == ["continue", "fresh"]
    assert len({c["version"] for c in cands}) == 2 and sum(c["put_up"] for c in cands) == 1
    chosen = next(c for c in cands if c["put_up"])
    other = next(c for c in cands if not c["put_up"])
    assert out["challenger"] == chosen["version"] and out["outcome"] == chosen["outcome"]
    if any(c["outcome"] == "promote" for c in cands):  # the best promotable one is put up
        assert chosen["outcome"] == "promote"
        assert chosen["f1"] >= max(c["f1"] for c in cands if c["outcome"] == "promote")
        assert alias_version(s, CHAMPION) == chosen["version"]
    else:
        assert chosen["f1"] >= other["f1"] and alias_version(s, CHAMPION) == before
    c = client(s)
    mv_chosen = c.get_model_version(s.mlflow.model_name, chosen["version"])
    mv_other = c.get_model_version(s.mlflow.model_name, other["version"])
    assert mv_chosen.tags["rtml.candidate"] == chosen["candidate"]
    assert mv_other.tags["rtml.candidate"] == other["candidate"]
    assert (
        mv_other.tags["rtml.candidate_of"] == chosen["version"] and "rtml.candidate_of" not in mv_chosen.tags
    )
    # both judged against the same champion on the same holdout rows
    assert mv_other.tags["rtml.compared_with"] == mv_chosen.tags["rtml.compared_with"] == before
    assert mv_other.tags["rtml.decision_holdout"] == mv_chosen.tags["rtml.decision_holdout"]
    assert mv_other.description.startswith(f"Candidate of the round that put up v{chosen['version']}")
    fresh = c.get_run(
        c.get_model_version(
            s.mlflow.model_name, next(x["version"] for x in cands if x["candidate"] == "fresh")
        ).run_id
    )
    assert fresh.data.params["candidate"] == "fresh" and fresh.data.params["parent_version"] == before
    # fresh trains from a change point in the champion's residuals only when one was found
    change = out["change_point"]
    assert change["change"] in ("none detected", "detected") or change["change"].startswith("detected, but")
    rows = {x["candidate"]: x["train_rows"] for x in cands}
    fresh_version = next(x["version"] for x in cands if x["candidate"] == "fresh")
    fresh_tags = c.get_model_version(s.mlflow.model_name, fresh_version).tags
    if change["change"] == "detected":
        assert rows["fresh"] < rows["continue"]
        assert fresh_tags["rtml.window_since_ms"] == str(change["change_since_ms"])
    else:
        assert rows["fresh"] == rows["continue"] and "rtml.window_since_ms" not in fresh_tags
