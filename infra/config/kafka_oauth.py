"""OAUTHBEARER tokens for rtml's Python Kafka clients (kafka-python and librdkafka).

A token comes from one of two sources (settings ``kafka.oauth_*``):

- ``kafka.oauth_token_provider``: a dotted path (``package.module:function`` or
  ``package.module.function``) to a callable that returns ``(token, expiry_epoch_seconds)`` or just
  the token (then taken as valid for an hour). It must be importable on the executors too.
- ``kafka.oauth_token_endpoint_url`` with ``kafka.oauth_client_id`` / ``kafka.oauth_client_secret``
  (and optional ``kafka.oauth_scope``): the OAuth 2 client-credentials grant, client authenticated
  with HTTP Basic, as Kafka's Java ``OAuthBearerLoginCallbackHandler`` does.

Connection options stay plain data (they travel to Spark executors as JSON); the token source is
built where a client is built, from the ``oauth_*`` keys of those options.
"""

from __future__ import annotations

import base64
import importlib
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

OAUTH_KEYS = (
    "oauth_token_provider",
    "oauth_token_endpoint_url",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
)
TokenSource = Callable[[], tuple[str, float]]


def load_callable(path: str) -> Callable[..., Any]:
    """The object a ``module:attr`` or ``module.attr`` path names; one-line ValueError if none."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"kafka.oauth_token_provider {path!r}: cannot import ({exc})") from None
    if not callable(obj):
        raise ValueError(f"kafka.oauth_token_provider {path!r}: not callable")
    return obj


def _normalise(answer: Any) -> tuple[str, float]:
    if isinstance(answer, str):
        return answer, time.time() + 3600.0
    token, expiry = answer
    return str(token), float(expiry)


class ClientCredentials:
    """Token from an OAuth 2 token endpoint (client-credentials grant), cached until near its expiry."""

    def __init__(self, url: str, client_id: str, client_secret: str, scope: str | None = None) -> None:
        self.url, self.client_id, self.scope = url, client_id, scope
        self._secret = client_secret
        self._lock = threading.Lock()
        self._cached: tuple[str, float] | None = None

    def __repr__(self) -> str:  # never the secret
        return f"ClientCredentials(url={self.url!r}, client_id={self.client_id!r})"

    def __call__(self) -> tuple[str, float]:
        with self._lock:
            now = time.time()
            if self._cached and self._cached[1] - now > 30:
                return self._cached
            form = {"grant_type": "client_credentials"} | ({"scope": self.scope} if self.scope else {})
            basic = base64.b64encode(f"{self.client_id}:{self._secret}".encode()).decode()
            req = urllib.request.Request(
                self.url,
                data=urllib.parse.urlencode(form).encode(),
                headers={
                    "Authorization": f"Basic {basic}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the configured endpoint
                body = json.loads(resp.read())
            self._cached = (str(body["access_token"]), now + float(body.get("expires_in", 3600)))
            return self._cached


def token_source(opts: dict[str, Any]) -> TokenSource:
    """The token source the ``oauth_*`` connection options describe."""
    if opts.get("oauth_token_provider"):
        fn = load_callable(opts["oauth_token_provider"])
        return lambda: _normalise(fn())
    if opts.get("oauth_token_endpoint_url"):
        return ClientCredentials(
            opts["oauth_token_endpoint_url"],
            opts.get("oauth_client_id") or "",
            opts.get("oauth_client_secret") or "",
            opts.get("oauth_scope"),
        )
    raise ValueError("OAUTHBEARER needs kafka.oauth_token_provider or kafka.oauth_token_endpoint_url")


def kafka_python_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """kafka-python keyword arguments: the ``oauth_*`` options become ``sasl_oauth_token_provider``."""
    out = {k: v for k, v in opts.items() if k not in OAUTH_KEYS}
    if opts.get("sasl_mechanism") == "OAUTHBEARER":
        from kafka.net.sasl.oauth import AbstractTokenProvider

        source = token_source(opts)

        class _Provider(AbstractTokenProvider):
            def token(self) -> str:
                return source()[0]

        out["sasl_oauth_token_provider"] = _Provider()
    return out


def librdkafka_oauth(opts: dict[str, Any]) -> dict[str, Any]:
    """librdkafka properties for OAUTHBEARER: its built-in OIDC grant, or ``oauth_cb`` with the provider."""
    if opts.get("sasl_mechanism") != "OAUTHBEARER":
        return {}
    if opts.get("oauth_token_provider"):
        source = token_source(opts)
        return {"oauth_cb": lambda _config: source()}
    conf = {
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": opts.get("oauth_token_endpoint_url"),
        "sasl.oauthbearer.client.id": opts.get("oauth_client_id"),
        "sasl.oauthbearer.client.secret": opts.get("oauth_client_secret"),
    }
    if opts.get("oauth_scope"):
        conf["sasl.oauthbearer.scope"] = opts["oauth_scope"]
    return conf
