"""Smoke round trip through the stack: Kafka consumer group, MLflow registry alias, Prefect flow run."""

from __future__ import annotations

import time
import uuid
from typing import Any

from rtml.infra.config.clients import configure_mlflow, prefect_api
from rtml.infra.config.settings import Settings


def kafka_round_trip(settings: Settings, n: int = 100) -> dict[str, Any]:
    """Produce n messages to a fresh topic and read them back with a consumer group."""
    from rtml.infra.config.kafka_clients import (
        connection_options,
        ensure_topics,
        make_consumer,
        make_producer,
    )

    opts = connection_options(settings)
    topic = f"rtml.smoke.{uuid.uuid4().hex[:8]}"
    ensure_topics(opts, [topic], settings.kafka.partitions)
    producer = make_producer(opts)
    sent = {f"m{i}".encode() for i in range(n)}
    for v in sent:
        producer.send(topic, value=v)
    producer.flush()
    producer.close()
    consumer = make_consumer(opts, topic, group_id=f"rtml-smoke-{topic}")
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in records)
    consumer.commit()
    consumer.close()
    ok = set(got) == sent and len(got) == n
    return {"ok": ok, "detail": f"{len(got)}/{n} messages via consumer group", "received": len(got)}


def mlflow_round_trip(settings: Settings) -> dict[str, Any]:
    """Log a tiny model, register it, alias it, load it back by alias and predict."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    configure_mlflow(settings)
    mlflow.set_experiment(f"{settings.mlflow.experiment}-smoke")
    x = pd.DataFrame({"a": np.linspace(-1, 1, 40), "b": np.linspace(1, -1, 40)})
    y = (x["a"] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    name = f"{settings.mlflow.model_name}-smoke"
    with mlflow.start_run(run_name="smoke"):
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=x.head(3), registered_model_name=name
        )
    version = info.registered_model_version
    MlflowClient().set_registered_model_alias(name, "smoke", version)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@smoke")
    same = bool((loaded.predict(x) == model.predict(x)).all())
    return {"ok": same, "detail": f"{name} v{version} loaded by alias @smoke", "version": version}


def prefect_round_trip(settings: Settings) -> dict[str, Any]:
    """Run a flow and read its final state back from the Prefect server."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="rtml-smoke")
    def smoke_flow(x: int) -> int:
        return x + 1

    with prefect_api(settings):
        state = smoke_flow(41, return_state=True)
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
    ok = state.result() == 42 and run.state is not None and run.state.is_completed()
    return {
        "ok": ok,
        "detail": f"flow run {run.name} {run.state.name if run.state else '?'}",
        "flow_run_id": str(run_id),
    }


def run_smoke(settings: Settings) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}
    for name, fn in (
        ("kafka", kafka_round_trip),
        ("mlflow", mlflow_round_trip),
        ("prefect", prefect_round_trip),
    ):
        t0 = time.monotonic()
        try:
            checks[name] = fn(settings)
        except Exception as exc:  # noqa: BLE001 - reported per check
            checks[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        checks[name]["seconds"] = round(time.monotonic() - t0, 2)
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}
