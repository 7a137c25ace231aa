"""Options of Spark's native Kafka connector (``format("kafka")``, the Java client) from settings.

Parity with rtml's Python clients (:mod:`rtml.infra.config.kafka_clients`, :mod:`rtml.pipelines.librdkafka`):

- ``kafka.ssl_cafile`` (PEM): ``ssl.truststore.type=PEM`` with the file as truststore location (the
  same path must exist on every executor, e.g. a mounted secret).
- ``kafka.ssl_certfile`` / ``kafka.ssl_keyfile`` (PEM): ``ssl.keystore.type=PEM`` with the certificate
  chain and the private key passed inline (read on the driver: executors need no files); the Java
  client needs the key in PKCS#8, encrypted with ``kafka.ssl_key_password`` or unencrypted.
- OAUTHBEARER: only with ``kafka.oauth_token_endpoint_url`` (client credentials, Kafka's
  ``OAuthBearerLoginCallbackHandler``); a Python ``kafka.oauth_token_provider`` cannot run in the JVM.
- ``kafka.api_version`` does not apply (the Java client negotiates versions).
"""

from __future__ import annotations

from pathlib import Path

from rtml.infra.config.settings import Settings

OAUTH_HANDLER = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"
_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "OAUTHBEARER": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule",
}


def _jaas(module: str, **fields: str | None) -> str:
    body = " ".join(f'{k}="{v}"' for k, v in fields.items() if v is not None)
    return f"{module} required {body};".replace("required ;", "required;")


def native_options(settings: Settings) -> dict[str, str]:
    """``kafka.*`` options of Spark's Kafka source and sink (secrets included: never log them)."""
    k = settings.kafka
    opts = {
        "kafka.bootstrap.servers": settings.kafka_bootstrap,
        "kafka.security.protocol": k.security_protocol,
    }
    if k.sasl_mechanism == "OAUTHBEARER":
        if not k.oauth_token_endpoint_url:
            raise ValueError(
                "kafka.connector native with OAUTHBEARER needs kafka.oauth_token_endpoint_url "
                "(a Python kafka.oauth_token_provider cannot run in Spark's JVM)"
            )
        secret = k.oauth_client_secret.get_secret_value() if k.oauth_client_secret else None
        opts["kafka.sasl.mechanism"] = "OAUTHBEARER"
        opts["kafka.sasl.login.callback.handler.class"] = OAUTH_HANDLER
        opts["kafka.sasl.oauthbearer.token.endpoint.url"] = k.oauth_token_endpoint_url
        opts["kafka.sasl.jaas.config"] = _jaas(
            _MODULES["OAUTHBEARER"], clientId=k.oauth_client_id, clientSecret=secret, scope=k.oauth_scope
        )
    elif k.sasl_mechanism:
        pwd = k.sasl_password.get_secret_value() if k.sasl_password else ""
        opts["kafka.sasl.mechanism"] = k.sasl_mechanism
        opts["kafka.sasl.jaas.config"] = _jaas(
            _MODULES[k.sasl_mechanism], username=k.sasl_username or "", password=pwd
        )
    if k.ssl_cafile:
        opts["kafka.ssl.truststore.type"] = "PEM"
        opts["kafka.ssl.truststore.location"] = k.ssl_cafile
    if k.ssl_certfile and k.ssl_keyfile:
        opts["kafka.ssl.keystore.type"] = "PEM"
        opts["kafka.ssl.keystore.certificate.chain"] = Path(k.ssl_certfile).read_text(encoding="utf-8")
        opts["kafka.ssl.keystore.key"] = Path(k.ssl_keyfile).read_text(encoding="utf-8")
    if k.ssl_key_password is not None:
        opts["kafka.ssl.key.password"] = k.ssl_key_password.get_secret_value()
    return opts
