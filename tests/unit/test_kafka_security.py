"""Kafka security settings mapped to each client: kafka-python, librdkafka, Spark's native connector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rtml.infra.config.kafka_clients import connection_options
from rtml.infra.config.kafka_oauth import ClientCredentials, kafka_python_kwargs, token_source
from rtml.infra.config.settings import ConfigError, load_settings
from rtml.pipelines.kafka_native import OAUTH_HANDLER, native_options
from rtml.pipelines.kafka_source import connection_from_options, spark_options
from rtml.pipelines.librdkafka import consumer_config, producer_config

CALLS: list[int] = []


def fixed_token() -> tuple[str, float]:
    CALLS.append(1)
    return "tok-123", 4_102_444_800.0


def _settings(tmp_path: Path, **kafka: Any) -> Any:
    return load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path), "kafka": kafka})


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {"ssl_cafile": "ca.pem", "ssl_certfile": "client.pem", "ssl_keyfile": "client.key"}
    out = {}
    for key, name in files.items():
        (tmp_path / name).write_text(f"-----BEGIN {name}-----\nAAAA\n-----END {name}-----\n")
        out[key] = str(tmp_path / name)
    return out


def test_tls_with_client_certificate_and_key_password(tmp_path: Path, pem: dict[str, str]) -> None:
    s = _settings(tmp_path, security_protocol="SSL", ssl_key_password="kp", **pem)
    kp = connection_options(s)
    assert (kp["ssl_cafile"], kp["ssl_certfile"], kp["ssl_keyfile"]) == (
        pem["ssl_cafile"],
        pem["ssl_certfile"],
        pem["ssl_keyfile"],
    )
    assert kp["ssl_password"] == "kp" and kp["security_protocol"] == "SSL"

    rd = consumer_config(kp)
    assert rd["security.protocol"] == "ssl"
    assert rd["ssl.ca.location"] == pem["ssl_cafile"]
    assert rd["ssl.certificate.location"] == pem["ssl_certfile"]
    assert rd["ssl.key.location"] == pem["ssl_keyfile"]
    assert rd["ssl.key.password"] == "kp"
    assert "api.version" not in rd and "api_version" not in rd  # librdkafka negotiates, ignores the setting

    nat = native_options(s)
    assert nat["kafka.ssl.truststore.type"] == "PEM"
    assert nat["kafka.ssl.truststore.location"] == pem["ssl_cafile"]
    assert nat["kafka.ssl.keystore.type"] == "PEM"
    assert nat["kafka.ssl.keystore.certificate.chain"] == Path(pem["ssl_certfile"]).read_text()
    assert nat["kafka.ssl.keystore.key"] == Path(pem["ssl_keyfile"]).read_text()
    assert nat["kafka.ssl.key.password"] == "kp"


def test_secrets_travel_to_the_data_source_as_redacted_options(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="pw",
        ssl_key_password="kp",
    )
    opts = spark_options(connection_options(s))
    assert "pw" not in opts["kafka.connection"] and "kp" not in opts["kafka.connection"]
    assert opts["kafka.sasl.password"] == "pw" and opts["kafka.ssl.password"] == "kp"
    back = connection_from_options({k.upper(): v for k, v in opts.items()})  # Spark hands keys in any case
    assert back["sasl_plain_password"] == "pw" and back["ssl_password"] == "kp"


def test_scram_and_plain_jaas_on_the_native_connector(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password="p",
    )
    nat = native_options(s)
    assert nat["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert nat["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";'
    )
    rd = producer_config(connection_options(s))
    assert (rd["sasl.mechanism"], rd["sasl.username"], rd["sasl.password"]) == ("SCRAM-SHA-512", "u", "p")


def test_oauth_token_provider_for_the_python_clients(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_provider="tests.unit.test_kafka_security:fixed_token",
    )
    kp = connection_options(s)
    json.dumps(kp)  # plain data: travels to executors
    kwargs = kafka_python_kwargs(kp)
    assert not any(k.startswith("oauth_") for k in kwargs)
    assert kwargs["sasl_mechanism"] == "OAUTHBEARER"
    assert kwargs["sasl_oauth_token_provider"].token() == "tok-123"

    rd = consumer_config(kp)
    assert rd["sasl.mechanism"] == "OAUTHBEARER"
    assert rd["oauth_cb"]("") == ("tok-123", 4_102_444_800.0)
    assert "sasl.oauthbearer.method" not in rd


def test_oauth_client_credentials_for_each_client(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        connector="native",
        oauth_token_endpoint_url="https://idp/token",
        oauth_client_id="cid",
        oauth_client_secret="cs",
        oauth_scope="kafka",
    )
    kp = connection_options(s)
    assert isinstance(token_source(kp), ClientCredentials) and "cs" not in repr(token_source(kp))
    rd = producer_config(kp)
    assert rd["sasl.oauthbearer.method"] == "oidc"
    assert rd["sasl.oauthbearer.token.endpoint.url"] == "https://idp/token"
    assert (rd["sasl.oauthbearer.client.id"], rd["sasl.oauthbearer.client.secret"]) == ("cid", "cs")
    assert rd["sasl.oauthbearer.scope"] == "kafka"

    nat = native_options(s)
    assert nat["kafka.sasl.mechanism"] == "OAUTHBEARER"
    assert nat["kafka.sasl.login.callback.handler.class"] == OAUTH_HANDLER
    assert nat["kafka.sasl.oauthbearer.token.endpoint.url"] == "https://idp/token"
    assert nat["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
        'clientId="cid" clientSecret="cs" scope="kafka";'
    )


@pytest.mark.parametrize(
    ("kafka", "needle"),
    [
        ({"sasl_mechanism": "OAUTHBEARER"}, "needs one of oauth_token_provider"),
        ({"sasl_mechanism": "OAUTHBEARER", "oauth_token_endpoint_url": "https://idp"}, "oauth_client_id"),
        (
            {"sasl_mechanism": "OAUTHBEARER", "oauth_token_provider": "m:f", "connector": "native"},
            "native connector",
        ),
    ],
)
def test_oauth_settings_refused_in_one_line(tmp_path: Path, kafka: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        _settings(tmp_path, **kafka)
    assert "\n" not in str(err.value)


def test_bad_provider_path_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot import"):
        token_source({"oauth_token_provider": "no_such_module_x:f"})
