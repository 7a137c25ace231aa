"""Settings: precedence, validation errors, secret masking (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtml.infra.config.settings import ConfigError, load_settings


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rtml.yaml"
    p.write_text(text)
    return p


def test_defaults_are_embedded_local_services() -> None:
    s = load_settings(use_default_file=False)
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.tracking_uri == "http://127.0.0.1:15000"
    assert s.prefect_api_url == "http://127.0.0.1:14200/api"
    assert s.kafka.api_version_tuple() == (2, 5)
    assert s.checkpoint_root == Path(".rtml/checkpoints")


def test_precedence_flag_over_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _yaml(
        tmp_path, "ports: {kafka: 1111, mlflow: 2222, prefect: 3333}\nmlflow: {experiment: from-yaml}\n"
    )
    monkeypatch.setenv("RTML_PORTS__MLFLOW", "4444")
    monkeypatch.setenv("RTML_PORTS__KAFKA", "5555")
    s = load_settings(cfg, overrides={"ports": {"kafka": 6666}})
    assert s.ports.kafka == 6666  # flag beats env and yaml
    assert s.ports.mlflow == 4444  # env beats yaml
    assert s.ports.prefect == 3333  # yaml beats default
    assert s.mlflow.experiment == "from-yaml"
    assert s.mlflow.model_name == "rtml-fraud"  # untouched default survives a partial section


def test_none_flags_do_not_override(tmp_path: Path) -> None:
    cfg = _yaml(tmp_path, "kafka: {bootstrap_servers: 'b1:9092'}\n")
    s = load_settings(cfg, overrides={"kafka": {"bootstrap_servers": None}})
    assert s.kafka_bootstrap == "b1:9092"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kafka: {bogus: 1}\n", "kafka.bogus: unknown setting"),
        ("ports: {kafka: abc}\n", "ports.kafka:"),
        ("ports: {kafka: 70000}\n", "ports.kafka:"),
        ("kafka: {api_version: 'two'}\n", "kafka.api_version:"),
        ("kafka: {security_protocol: 'SMOKE'}\n", "kafka.security_protocol:"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("a: [unclosed\n", "not valid YAML"),
        ("quality: {label_low_quantile: 0.805}\n", "label_low_quantile must be a whole percent"),
        ("quality: {label_alpha: 0}\n", "quality.label_alpha:"),
    ],
)
def test_bad_yaml_gives_one_line_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_yaml(tmp_path, text))
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg


def test_unknown_env_key_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_KAFAK__BOOTSTRAP_SERVERS", "x:1")
    with pytest.raises(ConfigError, match="RTML_KAFAK__BOOTSTRAP_SERVERS: unknown setting"):
        load_settings(use_default_file=False)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_secrets_are_masked(tmp_path: Path) -> None:
    cfg = _yaml(
        tmp_path,
        "kafka: {security_protocol: SASL_SSL, sasl_mechanism: PLAIN, "
        "sasl_username: u, sasl_password: hunter2}\n",
    )
    s = load_settings(cfg)
    assert "hunter2" not in str(s.public_dict())
    assert "hunter2" not in repr(s)
    from rtml.infra.config.kafka_clients import connection_options

    opts = connection_options(s)
    assert opts["sasl_plain_password"] == "hunter2"  # reaches the client, nothing else
    assert opts["security_protocol"] == "SASL_SSL"
