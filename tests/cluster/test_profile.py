"""`rtml up --profile cluster` (the tier's fixture ran it through the real CLI): every server healthy,
MLflow and Prefect on PostgreSQL, later commands find the services; then `rtml down` stops every
process it started and frees every port. Runs after test_cluster.py (file order): it ends the
tier's servers."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from urllib.parse import urlparse

import pytest
import requests

from rtml.infra.app.objectstore import signed_request
from tests.helpers import group_members, pids_alive, rtml, wait_for

pytestmark = pytest.mark.cluster

SERVERS = {"kafka", "mlflow", "prefect", "postgres", "objectstore", "spark-master", "spark-worker1"}
SERVERS |= {"spark-worker2"}


def _port(url: str) -> int:
    return urlparse(url if "://" in url else f"tcp://{url}").port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _psql(cluster, db: str, sql: str) -> str:  # noqa: ANN001
    """A query over the server's own unix socket, as the postgres user (local trust)."""
    rec = json.loads((cluster.settings.state_dir / "run" / "cluster" / "postgres.json").read_text())
    from rtml.infra.app.postgres import pg_bin

    cmd = f'{pg_bin()}/psql -h {rec["base"]} -p {_port(rec["url"])} -U postgres -d {db} -tAc "{sql}"'
    out = subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", cmd], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_up_starts_healthy_servers_on_postgres_that_later_commands_find(cluster) -> None:  # noqa: ANN001
    up = cluster.up
    assert up["ok"] and up["profile"] == "cluster"
    assert set(up["services"]) == SERVERS
    for name, svc in up["services"].items():
        assert svc["healthy"] and svc["action"] == "started" and not svc["external"], (name, svc)
        assert svc["url"].split("//")[-1].startswith("127.0.0.1:"), svc
    state = cluster.state()  # the master's JSON: both workers registered and alive
    alive = [w for w in state["workers"] if w["state"] == "ALIVE"]
    assert len(alive) == 2 and sum(w["cores"] for w in alive) == 2, state["workers"]
    s = cluster.settings
    assert requests.get(s.tracking_uri + "/health", timeout=5).status_code == 200
    assert requests.get(s.prefect_api_url + "/health", timeout=5).status_code == 200
    # their metadata is in PostgreSQL: MLflow's default experiment, Prefect's migrated schema
    assert int(_psql(cluster, "mlflow", "select count(*) from experiments")) >= 1
    assert _psql(cluster, "prefect", "select count(*) from alembic_version") == "1"
    # the object store holds the profile's Delta tables: signed requests only
    opts = {k: v.get_secret_value() for k, v in s.spark.storage_options.items()}
    assert (
        s.spark.table_root == "s3://rtml/tables"
        and opts["AWS_ENDPOINT_URL"] == up["services"]["objectstore"]["url"]
    )
    assert requests.put(opts["AWS_ENDPOINT_URL"] + "/rtml/anon", data=b"x", timeout=5).status_code == 403
    keys = {"access_key": opts["AWS_ACCESS_KEY_ID"], "secret_key": opts["AWS_SECRET_ACCESS_KEY"]}
    assert (
        signed_request("PUT", opts["AWS_ENDPOINT_URL"], "/rtml/probe", body=b"ok", **keys).status_code == 200
    )
    assert signed_request("GET", opts["AWS_ENDPOINT_URL"], "/rtml/probe", **keys).content == b"ok"
    # a later command with the same state dir sees the profile's endpoints and servers
    code, out, err = rtml("status", "--json", env=cluster.env)
    assert code == 0 and out["profile"] == "cluster", (out, err[-2000:])
    assert {n for n, v in out["services"].items() if v["healthy"] and v["managed"]} == SERVERS
    code, out, err = rtml("config", "--json", env=cluster.env)
    assert code == 0, err[-2000:]
    assert out["settings"]["spark"]["master"] == cluster.master_url
    assert out["settings"]["spark"]["table_root"] == "s3://rtml/tables"
    assert set(out["settings"]["spark"]["storage_options"].values()) == {"**********"}  # masked
    assert out["settings"]["scoring"]["state_url"] == "**********"  # the entity state's PostgreSQL
    assert cluster.settings.scoring.state_url.get_secret_value().endswith("/rtml_state")
    assert out["endpoints"]["mlflow"] == up["services"]["mlflow"]["url"]
    assert out["endpoints"]["prefect"] == up["services"]["prefect"]["url"]
    assert out["endpoints"]["kafka"] == up["services"]["kafka"]["url"]


def test_down_stops_every_process_it_started_and_frees_the_ports(cluster) -> None:  # noqa: ANN001
    services = cluster.up["services"]
    leaders = [svc["pid"] for svc in services.values()]
    postmaster = services["postgres"]["pid"]
    backends = [  # PostgreSQL's children (not a process group of its own)
        int(line.split()[0])
        for line in subprocess.run(
            ["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True
        ).stdout.splitlines()
        if int(line.split()[1]) == postmaster
    ]
    pids = sorted({*leaders, *backends, *(p for pid in leaders for p in group_members(pid))})
    assert len(pids) > len(SERVERS), pids  # MLflow's and Prefect's children are in there too
    ports = {name: _port(svc["url"]) for name, svc in services.items()}
    ports["spark-master-ui"] = _port(cluster.master_json)

    t0 = time.monotonic()
    code, out, err = rtml("down", "--json", env=cluster.env, timeout=180)
    assert code == 0, err[-2000:]
    assert out["stopped"] == {name: svc["pid"] for name, svc in services.items()} and not out["not_ours"]
    wait_for(lambda: not pids_alive(pids), 30, lambda: f"still alive: {pids_alive(pids)}")
    print(f"\nrtml down: {len(pids)} processes gone in {time.monotonic() - t0:.1f} s")
    busy = {name: port for name, port in ports.items() if not _port_free(port)}
    assert not busy, busy
    run = cluster.settings.state_dir / "run"
    assert not (run / "profile.json").exists() and not list((run / "cluster").glob("*.json"))
    code, out, err = rtml("status", "--json", env=cluster.env)  # back to the local stack's settings
    assert out["profile"] == "local" and not {"postgres", "spark-master"} & set(out["services"]), out
