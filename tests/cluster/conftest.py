"""One machine as a small cluster, started the way a user does: ``rtml up --profile cluster``
(a Spark standalone master + 2 workers, PostgreSQL, MLflow and Prefect on it, and the embedded
broker, all on 127.0.0.1 with free ports; ``rtml.infra.app.cluster``). The servers live for the
whole tier; test_profile.py's last test stops them with ``rtml down`` and checks nothing is left,
and teardown runs ``rtml down`` again in case it did not get there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers import rtml

SHIM = str(Path(__file__).resolve().parents[2] / ".shim")


def _pythonpath() -> str:
    parts = [SHIM, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return os.pathsep.join(dict.fromkeys(parts))


@dataclass
class Cluster:
    settings: object  # rtml Settings loaded from the state dir: the profile's endpoints
    master_url: str
    master_json: str
    root: Path  # <state_dir>/cluster: worker work dirs (worker1, worker2), MLflow artifacts
    up: dict  # what `rtml up --profile cluster --json` printed
    env: dict[str, str]  # environment of the CLI subprocesses (RTML_STATE_DIR)

    def state(self) -> dict:
        return requests.get(self.master_json, timeout=5).json()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from rtml.infra.app.postgres import INSTALL_HINT, pg_bin
    from rtml.infra.config.settings import load_settings

    if pg_bin() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    state_dir = tmp_path_factory.mktemp("cluster") / "stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTML_", "SPARK_", "PYSPARK_"))}
    env |= {
        "RTML_STATE_DIR": str(state_dir),
        "PYTHONPATH": _pythonpath(),  # the executors import this checkout's rtml
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    t0 = time.monotonic()
    try:
        code, out, err = rtml("up", "--profile", "cluster", "--json", env=env, timeout=420)
        assert code == 0 and out is not None, err[-3000:]
        print(f"\ncluster profile up in {time.monotonic() - t0:.1f} s: {out['spark_master']}")
        settings = load_settings(use_default_file=False, overrides={"state_dir": state_dir})
        assert settings.spark.master == out["spark_master"]  # later commands find the profile
        yield Cluster(settings, out["spark_master"], out["master_json"], state_dir / "cluster", out, env)
    finally:
        code, out, err = rtml("down", "--json", env=env, timeout=180)
        assert code == 0, err[-2000:]
