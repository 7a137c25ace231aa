"""Audit you cannot bypass (issue 20, drill 4), on the session's real MLflow, Prefect, broker and Spark.

Every alias move rtml makes is recorded (bootstrap, --force, promote, rollback); versions are
normalised; rollback walks the audited history back one step at a time; moves from two processes
serialise on the Prefect promotion lock; and a @champion moved by a plain REST call is not followed by
the scoring job, which raises a critical alert and keeps scoring with the audited version.

The tests run in file order on one model (each builds on the champion history the previous left).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.aliases import LifecycleError, audit_trail, champion_audit, rollback
from rtml.models.lifecycle.audit import POINTER_TAG, history, read_state
from rtml.models.lifecycle.lock import lock_name
from rtml.models.lifecycle.registry import CHAMPION, PREVIOUS, alias_version, client
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from tests.helpers import RTML, read_topic, rtml, scoped_settings, settings_env, sink_frame, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("audit")
    s = scoped_settings(stack, tmp, spark={"max_events_per_trigger": 1000})
    spec = load_spec()
    first = bootstrap(s, spec, n=4000)
    return {"settings": s, "spec": spec, "env": settings_env(s), "tmp": tmp, "first": first}


def _pointer(s) -> dict:  # noqa: ANN001
    return json.loads(client(s).get_registered_model(s.mlflow.model_name).tags[POINTER_TAG])


def test_bootstrap_and_bootstrap_force_are_audited_moves(world: dict) -> None:
    s, spec, env = world["settings"], world["spec"], world["env"]
    assert world["first"]["champion"] == "1" and world["first"]["previous_champion"] is None
    assert alias_version(s, PREVIOUS) is None
    code, out, err = rtml("bootstrap", "--force", "--n", "3000", "--json", env=env)
    assert code == 0, err[-2000:]
    assert out["champion"] == "2" and out["previous_champion"] == "1"
    assert bootstrap(s, spec, n=3000, seed=8, force=True)["champion"] == "3"
    assert alias_version(s, CHAMPION) == "3" and alias_version(s, PREVIOUS) == "2"
    moves = list(reversed(history(s)))
    assert [(m["kind"], m["from"], m["to"], m["seq"]) for m in moves] == [
        ("bootstrap", None, "1", 1),
        ("bootstrap", "1", "2", 2),
        ("bootstrap", "2", "3", 3),
    ]
    assert [m["reason"] for m in moves] == ["first champion", "bootstrap --force", "bootstrap --force"]
    assert len({m["move_id"] for m in moves}) == 3
    p = _pointer(s)
    assert p["version"] == "3" and p["state"] == "done" and p["stack"] == ["1", "2", "3"]
    assert p["move_id"] == moves[-1]["move_id"]
    assert audit_trail(s, "2")[-1]["role"] == "replaced"  # the replaced version keeps a copy
    # a bootstrap without --force leaves the audited champion alone
    assert bootstrap(s, spec, n=3000)["skipped"] and alias_version(s, CHAMPION) == "3"


def test_two_rollbacks_go_back_two_steps(world: dict) -> None:
    s, env = world["settings"], world["env"]
    code, out, err = rtml("rollback", "--reason", "bad deploy", "--json", env=env)
    assert code == 0, err[-2000:]
    assert out["champion"] == "2" and out["from"] == "3" and out["previous_champion"] == "1"
    back = rollback(s, "still bad", user="bob")
    assert back["champion"] == "1" and back["from"] == "2" and back["previous_champion"] is None
    assert alias_version(s, CHAMPION) == "1" and alias_version(s, PREVIOUS) is None  # v3->v2->v1
    with pytest.raises(LifecycleError, match="nothing to roll back to: v1 is the first audited champion"):
        rollback(s, "again")
    assert alias_version(s, CHAMPION) == "1"
    newest = history(s, limit=2)
    assert [(m["kind"], m["from"], m["to"], m["user"]) for m in newest] == [
        ("rollback", "2", "1", "bob"),
        ("rollback", "3", "2", newest[1]["user"]),
    ]
    assert _pointer(s)["stack"] == ["1"]


def test_version_arguments_are_normalised_or_refused_in_one_line(world: dict) -> None:
    s, env = world["settings"], world["env"]
    code, out, err = rtml("promote", "02", "--reason", "zero-padded", "--json", env=env)
    assert code == 0, err[-2000:]
    assert out["champion"] == "2" and out["to"] == "2"
    assert history(s, limit=1)[0]["to"] == "2" and alias_version(s, CHAMPION) == "2"
    code, out, err = rtml("promote", " 3 ", "--reason", "spaces", "--json", env=env)
    assert code == 0, err[-2000:]
    assert out["to"] == "3" and alias_version(s, CHAMPION) == "3"
    for bad, why in (("2x", "version must be a whole number like 3, got '2x'"), ("99", "has no version 99")):
        code, out, err = rtml("promote", bad, "--reason", "nope", "--json", env=env)
        assert code == 1 and why in err and len(err.strip().splitlines()) == 1, err
    assert alias_version(s, CHAMPION) == "3" and _pointer(s)["stack"] == ["1", "2", "3"]


HOLDER = """
import sys, time
from pathlib import Path
from rtml.infra.config.settings import load_settings
from rtml.models.lifecycle.lock import promotion_lock
with promotion_lock(load_settings(use_default_file=False)):
    print("held", flush=True)
    deadline = time.monotonic() + 120
    while not Path(sys.argv[1]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    print(int(time.time() * 1000), flush=True)
"""

CONTENDER = """
import json, sys
import mlflow, prefect.concurrency.sync  # imported before we say we are about to move
from rtml.infra.config.settings import load_settings
from rtml.models.lifecycle.aliases import move_champion
s = load_settings(use_default_file=False)
print("acquiring", flush=True)
print(json.dumps(move_champion(s, sys.argv[1], kind="manual", reason="proc " + sys.argv[1], user="proc")))
"""


def test_moves_from_two_processes_serialise_on_the_prefect_lock(world: dict) -> None:
    from prefect.client.orchestration import get_client

    from rtml.infra.config.clients import prefect_api

    s, env, tmp = world["settings"], world["env"], world["tmp"]
    release = tmp / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(release)], env=env, stdout=subprocess.PIPE, text=True
    )
    contenders: list[subprocess.Popen] = []
    try:
        assert holder.stdout.readline().strip() == "held"
        with prefect_api(s), get_client(sync_client=True) as pc:  # the slot is taken on the shared server
            limit = pc.read_global_concurrency_limit_by_name(lock_name(s.mlflow.model_name))
            assert limit.limit == 1 and limit.active_slots == 1
        contenders = [
            subprocess.Popen([sys.executable, "-c", CONTENDER, v], env=env, stdout=subprocess.PIPE, text=True)
            for v in ("1", "2")
        ]
        for p in contenders:
            assert p.stdout.readline().strip() == "acquiring"
        time.sleep(3)  # both are now waiting for the slot
        assert all(p.poll() is None for p in contenders), "a move went through while the lock was held"
        release.touch()
        released_ms = int(holder.stdout.readline())
        results = [json.loads(p.communicate(timeout=180)[0].strip().splitlines()[-1]) for p in contenders]
    finally:
        release.touch()
        for p in [holder, *contenders]:
            if p.poll() is None:
                p.kill()
    assert holder.wait(30) == 0
    first, second = sorted(results, key=lambda r: r["seq"])
    assert first["at_ms"] >= released_ms and second["at_ms"] >= released_ms  # both waited for the holder
    assert second["seq"] == first["seq"] + 1 and second["from"] == first["to"]  # one after the other
    assert first["from"] == "3"
    recorded = {m["move_id"] for m in history(s, limit=2)}
    assert recorded == {first["move_id"], second["move_id"]}  # no lost audit record
    p = _pointer(s)
    assert alias_version(s, CHAMPION) == second["to"] == p["version"] and p["state"] == "done"
    assert p["stack"] == ["1", "2", "3", first["to"], second["to"]]


def _produce(s, n: int, seed: int) -> None:  # noqa: ANN001
    spec = load_spec()
    stream_frames(s, spec, generated_frames(spec, n, seed, None, 500), seed=seed)


def _scored_with_prefix(s, prefix: str) -> int:  # noqa: ANN001
    frame = sink_frame(s, "scores")
    return int(frame["transaction_id"].str.startswith(prefix).sum()) if len(frame) else 0


def test_unaudited_rest_move_alerts_and_the_job_keeps_the_audited_version(world: dict) -> None:
    s, spec, env = world["settings"], world["spec"], world["env"]
    from rtml.models.lifecycle.aliases import promote_manual

    audited = alias_version(s, CHAMPION)
    poisoned = "3" if audited != "3" else "1"
    stop = threading.Event()
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_scoring(s, spec, stop=stop)))
    runner.start()
    try:
        _produce(s, 600, seed=61)
        wait_for(lambda: _scored_with_prefix(s, "tx-61-") >= 550, 240)
        # what the drill did: a plain REST call moves @champion (the MLflow client is that endpoint)
        client(s).set_registered_model_alias(s.mlflow.model_name, CHAMPION, poisoned)
        assert read_state(s).alias == poisoned
        _produce(s, 600, seed=62)
        wait_for(lambda: _scored_with_prefix(s, "tx-62-") >= 550, 240)
        # an audited move is followed again: the operator accepts the version with a reason
        promote_manual(s, spec, poisoned, "reviewed: accept the hand-set champion", user="ops")
        _produce(s, 600, seed=63)
        wait_for(lambda: _scored_with_prefix(s, "tx-63-") >= 550, 240)
    finally:
        stop.set()
        runner.join(timeout=120)
    assert result.get("ok"), result
    scores = sink_frame(s, "scores")
    by_seed = {
        seed: set(scores.loc[scores["transaction_id"].str.startswith(f"tx-{seed}-"), "model_version"])
        for seed in (61, 62, 63)
    }
    assert by_seed == {61: {audited}, 62: {audited}, 63: {poisoned}}

    alerts = [json.loads(r.value) for r in read_topic(s, s.kafka.topics.alerts)]
    unaudited = [a for a in alerts if a["event"] == "rtml.champion.unaudited"]
    assert len(unaudited) == 1, alerts  # one alert per incident, not one per micro-batch
    payload = unaudited[0]["payload"]
    assert payload["severity"] == "critical" and unaudited[0]["resource"]["rtml.alert.severity"] == "critical"
    assert payload["alias_version"] == poisoned and payload["serving_version"] == audited
    assert payload["audited_version"] == audited and unaudited[0]["prefect_event_id"]

    batches = [json.loads(p.read_text()) for p in sorted((s.sink_root / "_batches").glob("*.json"))]
    flagged = [b for b in batches if b["champion_status"] == "unaudited"]
    assert flagged and all(b["model_version"] == audited and b["champion_alias"] == poisoned for b in flagged)

    # the operator's view: where @champion points, that it is audited again, and the last moves
    code, out, err = rtml("models", "--json", env=env)
    assert code == 0, err[-2000:]
    audit = out["champion"]
    assert (
        audit["alias"] == poisoned and audit["status"] == "audited" and audit["audited_version"] == poisoned
    )
    last = audit["moves"][0]
    assert last["kind"] == "manual" and last["to"] == poisoned and last["unaudited_from"] == poisoned
    assert len(audit["moves"]) == 10 and audit["rollback_path"][0] == audited
    assert champion_audit(s, moves=3)["moves"] == audit["moves"][:3]


def test_models_table_shows_the_champion_and_its_last_moves(world: dict) -> None:
    proc = subprocess.run([RTML, "models"], env=world["env"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "champion moves" in proc.stdout and "@champion v" in proc.stdout and "audited" in proc.stdout


def test_unaudited_champion_at_job_start_is_refused(world: dict) -> None:
    """A model whose @champion was only ever set by hand: the job does not start on it (unless allowed)."""
    import mlflow

    from rtml.infra.config.clients import configure_mlflow
    from rtml.pipelines.champion_guard import ChampionGuard

    s = world["settings"]
    other = s.model_copy(
        update={"mlflow": s.mlflow.model_copy(update={"model_name": s.mlflow.model_name + "-x"})}
    )
    configure_mlflow(s)
    mv = mlflow.register_model(f"models:/{s.mlflow.model_name}/1", other.mlflow.model_name)
    c = client(s)
    c.set_registered_model_alias(other.mlflow.model_name, CHAMPION, mv.version)
    with pytest.raises(RuntimeError, match="without an rtml audit record"):
        ChampionGuard(other).resolve()
    allowed = other.model_copy(
        update={"promotion": other.promotion.model_copy(update={"allow_unaudited_moves": True})}
    )
    assert ChampionGuard(allowed).resolve() == str(mv.version)
