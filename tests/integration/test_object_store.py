"""The learning loop with every Delta table on a real S3-compatible server (SeaweedFS on 127.0.0.1):
produce -> score (Spark) -> labels flow -> retrain flow, tables read back over S3, nothing but
checkpoints and run state on the local disk, and the secret key nowhere in logs, MLflow or Prefect."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from deltalake import DeltaTable

from rtml.flows.bootstrap import bootstrap
from rtml.flows.drift import drift_flow
from rtml.flows.labels import labels_flow
from rtml.flows.retrain import retrain_flow
from rtml.infra.app.objectstore import ObjectStore, start_object_store
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.settings import public_overrides
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.registry import client
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from tests.helpers import rtml, scoped_settings, settings_env, valid_and_malformed

pytestmark = pytest.mark.integration

BUCKET = "rtml-tables"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    """The object store lives outside the state dir: it stands for remote storage."""
    st = start_object_store(
        tmp_path / "objectstore", bucket=BUCKET, access_key="rtml-e2e", secret_key=secrets.token_hex(20)
    )
    try:
        yield st
    finally:
        st.stop()
    assert not st.alive()


def _table(store: ObjectStore, name: str, version: int | None = None) -> DeltaTable:
    return DeltaTable(f"s3://{BUCKET}/rtml/{name}", storage_options=store.storage_options(), version=version)


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_learning_loop_on_the_object_store(stack, tmp_path: Path, store: ObjectStore, monkeypatch) -> None:
    # credentials travel in the environment, like every rtml secret; the flows get public overrides
    monkeypatch.setenv("RTML_SPARK__STORAGE_OPTIONS", json.dumps(store.storage_options()))
    s = scoped_settings(
        stack,
        tmp_path,
        spark={"table_root": f"s3://{BUCKET}/rtml"},
        promotion={"min_holdout": 200, "min_positives": 5},
        retrain={"min_new_rows": 500},
    )
    assert s.spark.storage_options["AWS_SECRET_ACCESS_KEY"].get_secret_value() == store.secret_key
    overrides = public_overrides(s)
    assert store.secret_key not in json.dumps(overrides)
    spec = load_spec()

    assert bootstrap(s, spec, n=6000)["champion"] == "1"
    produced = stream_frames(
        s, spec, generated_frames(spec, 3000, 21, None, 1000), malformed_rate=0.05, seed=21
    )
    assert produced["malformed_total"] > 0 and produced["labels"] == produced["valid"]
    summary = run_scoring(s, spec, available_now=True)
    valid, bad = valid_and_malformed(s)
    assert summary["read"] == 3000 == summary["scored"] + summary["quarantined"]
    assert summary["scored"] == len(valid) and summary["quarantined"] == len(bad)

    with prefect_api(s):
        labelled = labels_flow(overrides=overrides)
        retrained = retrain_flow(overrides=overrides, trigger="manual")
    assert labelled["new_labels"] == len(valid), labelled

    # read back from the S3 endpoint, not through rtml
    scores = _table(store, "scores").to_pandas()
    assert len(scores) == len(valid) and set(scores[spec.event_id]) == set(valid)
    quarantine = _table(store, "quarantine").to_pandas()
    assert len(quarantine) == len(bad)
    table = _table(store, "labelled")
    rows = table.to_pandas()
    assert len(rows) == len(valid) and rows[spec.event_id].is_unique
    assert set(rows[spec.event_id]) == set(valid)

    # lineage: the registered version names the labelled table version it read; time travel works
    assert retrained["challenger"] == "2", retrained
    version = retrained["window"]["labelled_table_version"]
    assert version == table.version()
    run = client(s).get_run(client(s).get_model_version(s.mlflow.model_name, "2").run_id)
    assert int(run.data.params["window_labelled_table_version"]) == version
    assert len(_table(store, "labelled", version).to_pandas()) == len(valid)
    assert json.loads(run.data.tags["rtml.window"])["labelled_table_version"] == version

    # the drift check and the CLI (credentials from the environment only) read the same tables
    with prefect_api(s):
        drift = drift_flow(overrides=overrides)
    assert drift["events"] == len(valid) and drift["labelled"] > 0, drift
    env = {**settings_env(s), "RTML_SPARK__STORAGE_OPTIONS": json.dumps(store.storage_options())}
    event_id = scores[spec.event_id].iloc[0]
    code, shown, err = rtml("explain", event_id, "--json", env=env, timeout=120)
    assert code == 0 and shown["event"]["event_id"] == event_id, err[-2000:]
    assert store.secret_key not in err

    # the labels flow on another machine (no local offsets file) resumes where the labels table is
    (s.sink_root / "labels" / "_offsets.json").unlink()
    more = stream_frames(s, spec, generated_frames(spec, 200, 22, None, 200), seed=22)
    with prefect_api(s):
        again = labels_flow(overrides=overrides)
    assert again["new_labels"] == more["labels"] == 200, again
    assert len(_table(store, "labels").to_pandas()) == len(valid) + 200

    # the local state dir holds checkpoints and run state, no table
    local = s.state_dir
    assert not list(local.rglob("_delta_log")), "a Delta table was written locally"
    assert not [p for p in local.rglob("*.parquet") if "checkpoints" not in p.parts]

    # the secret key: in no file under the state dir, no MLflow param/tag, no Prefect flow parameter
    needle = store.secret_key.encode()
    assert _files_holding(local, needle) == []
    for r in client(s).search_runs([run.info.experiment_id]):
        assert store.secret_key not in json.dumps({**r.data.params, **r.data.tags})
    artifacts = Path(client(s).download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    assert list(artifacts.rglob("*")) and _files_holding(artifacts, needle) == []
    with prefect_api(s):
        from prefect import get_client

        with get_client(sync_client=True) as pc:
            runs = pc.read_flow_runs()
    assert runs and all(store.secret_key not in json.dumps(fr.parameters, default=str) for fr in runs)
