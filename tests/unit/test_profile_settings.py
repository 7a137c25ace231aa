"""A running profile's endpoints are a settings source below the user's own; the cluster profile
refuses endpoints it would shadow; its `down` signals only processes that are still its own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from rtml.infra.app import cluster
from rtml.infra.app.stack import StackError, _proc_start
from rtml.infra.config.profile import write_profile
from rtml.infra.config.settings import load_settings
from tests.helpers import pids_alive

PROFILE = {
    "spark": {"master": "spark://127.0.0.1:7077"},
    "mlflow": {"tracking_uri": "http://127.0.0.1:5001"},
    "prefect": {"api_url": "http://127.0.0.1:4201/api"},
    "ports": {"kafka": 29999},
}


def _load(tmp_path: Path, **overrides):  # noqa: ANN003, ANN202
    return load_settings(use_default_file=False, overrides={"state_dir": tmp_path, **overrides})


def test_profile_endpoints_are_picked_up_from_the_state_dir(tmp_path: Path) -> None:
    assert _load(tmp_path).spark.master == "local[2]"
    write_profile(tmp_path, {"profile": "cluster", "settings": PROFILE})
    s = _load(tmp_path)
    assert s.spark.master == "spark://127.0.0.1:7077"
    assert s.tracking_uri == "http://127.0.0.1:5001"
    assert s.prefect_api_url == "http://127.0.0.1:4201/api"
    assert s.kafka_bootstrap == "127.0.0.1:29999"
    assert s.cluster.workers == 2 and s.cluster.cores == 1


def test_explicit_settings_win_over_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_profile(tmp_path, {"profile": "cluster", "settings": PROFILE})
    monkeypatch.setenv("RTML_SPARK__MASTER", "local[1]")
    s = _load(tmp_path, mlflow={"tracking_uri": "http://mine:5000"})
    assert s.spark.master == "local[1]" and s.tracking_uri == "http://mine:5000"
    assert s.prefect_api_url == "http://127.0.0.1:4201/api"  # the rest still from the profile


def test_cluster_profile_refuses_an_endpoint_it_would_shadow(tmp_path: Path) -> None:
    s = _load(tmp_path, mlflow={"tracking_uri": "http://mine:5000"})
    with pytest.raises(StackError, match=r"unset mlflow\.tracking_uri"):
        cluster.up(s)
    assert not (tmp_path / "run").exists()  # refused before anything started


def test_cluster_down_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    s = _load(tmp_path)
    ours, stranger = (subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(2))
    try:
        run = tmp_path / "run" / "cluster"
        run.mkdir(parents=True)
        for name, proc, start in (
            ("spark-worker1", ours, _proc_start(ours.pid)),
            ("spark-worker2", stranger, "1"),  # same pid, another start time: not ours any more
        ):
            (run / f"{name}.json").write_text(json.dumps({"pid": proc.pid, "proc_start": start}))
        write_profile(tmp_path, {"profile": "cluster", "settings": PROFILE})
        out = cluster.down(s)
        assert out == {"stopped": {"spark-worker1": ours.pid}, "not_ours": {"spark-worker2": stranger.pid}}
        assert pids_alive([ours.pid, stranger.pid]) == [stranger.pid]  # (down reaped its own child)
        assert not list(run.glob("*.json")) and not (tmp_path / "run" / "profile.json").exists()
    finally:
        for proc in (ours, stranger):
            proc.kill()
            proc.wait()


def test_unknown_profile_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from tests.helpers import RTML

    env = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")} | {
        "RTML_STATE_DIR": str(tmp_path)
    }
    out = subprocess.run(
        [RTML, "up", "--profile", "bogus"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "--profile" in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()
