"""Kubernetes manifests (infra/deploy/k8s) parse and use only real settings keys (on paper: no cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from rtml.infra.config.settings import Settings, load_settings

K8S = Path(__file__).resolve().parents[2] / "infra" / "deploy" / "k8s"


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _rtml_keys(node: Any) -> Iterator[tuple[str, Any]]:
    """Every RTML_* variable: env entries (name/value) and ConfigMap/Secret data keys."""
    if isinstance(node, dict):
        name = node.get("name")
        if isinstance(name, str) and name.startswith("RTML_") and ("value" in node or "valueFrom" in node):
            yield name, node.get("value")
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("RTML_"):
                yield key, value
            yield from _rtml_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _rtml_keys(item)


def _is_setting(env_name: str) -> bool:
    model: type[BaseModel] = Settings
    parts = env_name.removeprefix("RTML_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif i != len(parts) - 1:
            return False
    return True


def test_manifests_are_the_expected_kinds() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _docs()}
    assert ("SparkApplication", "rtml-scoring") in kinds
    assert {("Deployment", "mlflow"), ("Deployment", "prefect-worker"), ("Job", "prefect-work-pool")} <= kinds
    app = next(d for d in _docs() if d["kind"] == "SparkApplication")
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert app["spec"]["mainApplicationFile"].endswith("pipelines/score_job.py")


def test_every_rtml_variable_is_a_real_setting() -> None:
    keys = dict(_rtml_keys(_docs()))
    assert len(keys) >= 15
    unknown = sorted(k for k in keys if not _is_setting(k))
    assert unknown == []
    assert _is_setting("RTML_SPARK__DRIVER_HOST") and not _is_setting("RTML_SPARK__NO_SUCH_KEY")
    assert not _is_setting("RTML_KAFKA__TOPICS__NOPE") and _is_setting("RTML_KAFKA__TOPICS__EVENTS")


def test_config_map_loads_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    cm = next(d for d in _docs() if d["kind"] == "ConfigMap")
    for key, value in cm["data"].items():
        monkeypatch.setenv(key, value)
    s = load_settings(use_default_file=False)
    assert s.prefect.work_pool == "rtml"
    assert s.kafka.security_protocol == "SASL_SSL"
    assert str(s.checkpoint_root) == "/shared/rtml/checkpoints"


def test_work_pool_setting_reaches_the_deployments(tmp_path: Path) -> None:
    from rtml.flows.deployments import build

    s = load_settings(
        use_default_file=False, overrides={"state_dir": str(tmp_path), "prefect": {"work_pool": "p1"}}
    )
    assert {d.work_pool_name for d in build(s)} == {"p1"}
    plain = load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path)})
    assert {d.work_pool_name for d in build(plain)} == {None}
