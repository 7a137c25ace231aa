"""Real round trips through the session stack: broker, MLflow registry, Prefect server."""

from __future__ import annotations

import pytest

from rtml.infra.app.smoke import kafka_round_trip, mlflow_round_trip, prefect_round_trip

pytestmark = pytest.mark.integration


def test_kafka_consumer_group_round_trip(stack) -> None:
    result = kafka_round_trip(stack, n=500)
    assert result["received"] == 500
    assert result["ok"] is True


def test_mlflow_register_alias_and_load(stack) -> None:
    from mlflow import MlflowClient

    first = mlflow_round_trip(stack)
    second = mlflow_round_trip(stack)
    assert first["ok"] and second["ok"]
    assert int(second["version"]) == int(first["version"]) + 1  # a new version, never an overwrite
    client = MlflowClient(stack.tracking_uri)
    mv = client.get_model_version_by_alias(f"{stack.mlflow.model_name}-smoke", "smoke")
    assert mv.version == second["version"]


def test_prefect_flow_run_recorded_by_server(stack) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from rtml.infra.config.clients import prefect_api

    result = prefect_round_trip(stack)
    assert result["ok"] is True
    with prefect_api(stack), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["rtml-smoke"])))
    assert result["flow_run_id"] in {str(r.id) for r in runs}
    assert all(r.state.is_completed() for r in runs)
