"""Platform settings.

Precedence, highest first: CLI flags (passed as ``overrides``) > environment ``RTML_*``
(nested keys joined by ``__``, e.g. ``RTML_KAFKA__BOOTSTRAP_SERVERS``) > YAML file
(``--config``, default ``rtml.yaml`` when present) > the endpoints of a profile started by
``rtml up --profile`` in the same state dir (``<state_dir>/run/profile.json``) > defaults.

A service left unset (``kafka.bootstrap_servers``, ``mlflow.tracking_uri``, ``prefect.api_url``)
is the embedded local one that ``rtml up`` runs on 127.0.0.1; set it and rtml uses yours.

>>> s = load_settings(overrides={"ports": {"kafka": 29092}}, config_file=None, use_default_file=False)
>>> s.kafka_bootstrap
'127.0.0.1:29092'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rtml.infra.config.profile import ClusterSettings, merged_under, read_profile
from rtml.infra.config.settings_ops import (
    AlertSettings,
    DriftSettings,
    MaintenanceSettings,
    MetricsSettings,
    QualitySettings,
)

DEFAULT_CONFIG_FILE = Path("rtml.yaml")
_YAML_DATA: ContextVar[dict[str, Any] | None] = ContextVar("rtml_yaml_data", default=None)


class ConfigError(Exception):
    """Invalid configuration; its message is one line naming the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TopicSettings(_Section):
    events: str = "rtml.events"
    labels: str = "rtml.labels"
    scores: str = "rtml.scores"
    quarantine: str = "rtml.quarantine"
    alerts: str = "rtml.alerts"

    def all(self) -> list[str]:
        return [self.events, self.labels, self.scores, self.quarantine, self.alerts]


class KafkaSettings(_Section):
    bootstrap_servers: str | None = Field(
        default=None, description="External cluster 'host:port,...'; unset = embedded broker."
    )
    api_version: str = Field(default="2.5", description="'auto' or 'X.Y' (2.5 for the embedded broker).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted ssl_keyfile."
    )
    oauth_token_provider: str | None = Field(
        default=None,
        description="OAUTHBEARER: 'module:function' returning (token, expiry epoch s) or a token "
        "(Python clients only).",
    )
    oauth_token_endpoint_url: str | None = Field(
        default=None, description="OAUTHBEARER: OAuth 2 token endpoint (client-credentials grant)."
    )
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_scope: str | None = None
    partitions: int = Field(default=2, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    connector: Literal["python", "native"] = Field(
        default="python", description="Spark Kafka I/O: python data source, or native format('kafka')."
    )
    io_client: Literal["librdkafka", "kafka-python"] = Field(
        default="librdkafka",
        description="Client of Spark tasks' Kafka reads and of the job's output: librdkafka, kafka-python.",
    )
    on_offset_reset: Literal["fail", "earliest", "latest"] = Field(
        default="fail",
        description="When the log no longer holds the checkpoint's offsets (topic recreated, broker "
        "reset, retention): fail the query, or read from the log's earliest / latest offset (recorded).",
    )
    topics: TopicSettings = TopicSettings()

    @model_validator(mode="after")
    def _oauth_source(self) -> KafkaSettings:
        if self.sasl_mechanism != "OAUTHBEARER":
            return self
        if bool(self.oauth_token_provider) == bool(self.oauth_token_endpoint_url):
            raise ValueError(
                "sasl_mechanism OAUTHBEARER needs one of oauth_token_provider or oauth_token_endpoint_url"
            )
        if self.oauth_token_endpoint_url and not (self.oauth_client_id and self.oauth_client_secret):
            raise ValueError("oauth_token_endpoint_url needs oauth_client_id and oauth_client_secret")
        if self.oauth_token_provider and self.connector == "native":
            raise ValueError(
                "oauth_token_provider is Python: the native connector (JVM) needs oauth_token_endpoint_url"
            )
        return self

    @model_validator(mode="after")
    def _native_offset_reset(self) -> KafkaSettings:
        if self.connector == "native" and self.on_offset_reset == "latest":
            raise ValueError(
                "on_offset_reset 'latest' needs connector 'python': the native connector's "
                "failOnDataLoss=false goes on from the earliest offset the log holds (use 'earliest')"
            )
        return self

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, v: str) -> str:
        if v != "auto":
            parts = v.split(".")
            if not (2 <= len(parts) <= 3 and all(p.isdigit() for p in parts)):
                raise ValueError("must be 'auto' or a version like '2.5'")
        return v

    def api_version_tuple(self) -> tuple[int, ...] | None:
        return None if self.api_version == "auto" else tuple(int(p) for p in self.api_version.split("."))


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(default=None, description="Unset = embedded MLflow server.")
    experiment: str = "rtml"
    model_name: str = "rtml-fraud"


class PrefectSettings(_Section):
    api_url: str | None = Field(default=None, description="Unset = embedded Prefect server.")
    work_pool: str | None = Field(
        default=None,
        description="Register `rtml deploy`'s deployments on this work pool (run by a Prefect worker); "
        "unset = run by `rtml serve`.",
    )


class SparkSettings(_Section):
    master: str = "local[2]"
    driver_host: str = Field(
        default="127.0.0.1",
        description="spark.driver.host: the address executors reach the driver at (not `host`, the "
        "embedded services' bind address).",
    )
    checkpoint_root: Path | None = Field(default=None, description="Default: <state_dir>/checkpoints")
    sink_root: Path | None = Field(default=None, description="Default: <state_dir>/sink")
    table_root: str | None = Field(
        default=None,
        description="Delta tables (scores, quarantine, labelled): a local path or an object-store URI "
        "(s3://bucket/prefix). Default: <sink_root>.",
    )
    storage_options: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="delta-rs storage options for table_root (e.g. AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID).",
    )
    shuffle_partitions: int = Field(
        default=1,
        ge=1,
        description="State and scoring stage partitions: 1 is fastest on local[2], more on a cluster.",
    )
    trigger_interval: str = "0 seconds"
    max_events_per_trigger: int = Field(default=50_000, ge=1)
    entity_buckets: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="State groups for per-entity aggregates (hash of the entity key modulo this). Unset: 1 "
        "with the sqlite state store (one file and one commit per micro-batch), 4 with postgres, 8 with "
        "Spark's store. A "
        "checkpoint records the number it started with and keeps it while this is unset.",
    )
    sink_writes: Literal["driver", "executors", "auto"] = Field(
        default="auto",
        description="Who writes the scoring job's Delta data files: the driver (collects each micro-batch) "
        "or the batch's tasks (the driver only commits them and reads the Kafka output back in slices). "
        "auto = executors when the master is not local[...].",
    )
    outbox_slice_rows: int = Field(
        default=5_000,
        ge=1,
        description="Rows the driver holds at a time when sending executor-written batches.",
    )
    malloc_mmap_threshold: int = Field(
        default=0,
        ge=0,
        le=33_554_432,
        description="glibc malloc in the job's processes (the driver, its JVM, the Python workers, "
        "executors): blocks of this many bytes or more are mapped on their own and returned to the OS "
        "when freed (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_; what you set yourself, there or "
        "in GLIBC_TUNABLES, wins). 0 (the default) keeps glibc's, whose threshold grows to 32 MB, so a "
        "micro-batch's arrays stay in each process's heap after it. 131072 measured 0.2-0.4 GB less "
        "PSS but a higher latency at 2,000 events/s (README 'Benchmarks'). 0 or 16384 to 33554432 bytes.",
    )

    malloc_arena_max: int = Field(
        default=2,
        ge=0,
        le=1024,
        description="glibc malloc arenas per process (MALLOC_ARENA_MAX) in local mode (a local or local[N] "
        "master): the driver, its JVM (not under spark-submit, whose JVM is already running) and the Python "
        "workers; a cluster keeps glibc's default. Your own MALLOC_ARENA_MAX or glibc.malloc.arena_max in "
        "GLIBC_TUNABLES wins. glibc's default, up to 8 per core, keeps memory one thread freed away from "
        "the others (README 'Benchmarks', 2026-12-04). 0 keeps glibc's default.",
    )

    @field_validator("malloc_mmap_threshold")
    @classmethod
    def _sane_threshold(cls, v: int) -> int:
        if 0 < v < 16_384:  # every small block mapped and unmapped: syscalls and kernel map entries
            raise ValueError("0 (glibc's default) or at least 16384 bytes")
        return v

    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark configuration entries.")


class PortSettings(_Section):
    kafka: int = Field(default=19092, ge=1, le=65535)
    mlflow: int = Field(default=15000, ge=1, le=65535)
    prefect: int = Field(default=14200, ge=1, le=65535)


class ScoringSettings(_Section):
    pseudonymise_entities: bool = False
    pseudonym_key: SecretStr | None = None
    max_event_bytes: int = Field(default=16_384, ge=64)
    explain_top_k: int = Field(
        default=3,
        ge=0,
        le=50,
        description="Top contributing features stored with every score (0 = no explanations).",
    )
    dedup_horizon_seconds: int = Field(
        default=86_400,
        ge=0,
        description="An event whose id was seen on the same entity within this much event time (of that "
        "entity's newest event) is a duplicate: not scored, not counted in aggregates, counted in the "
        "batch's `duplicates`. 0 turns de-duplication off.",
    )
    state_idle_ttl_seconds: int = Field(
        default=7 * 86_400,
        ge=0,
        description="An entity whose newest event is this much event time older than the newest event of "
        "its state bucket is evicted from state (at least the longest aggregate window, so in-order "
        "aggregates stay exact); keeps state bounded by the active entities. 0 keeps every entity forever.",
    )
    state_store: Literal["auto", "spark", "sqlite", "postgres"] = Field(
        default="auto",
        description="Where per-entity state lives. sqlite: one SQLite file per bucket under the checkpoint, "
        "keyed by entity, so a micro-batch reads and writes only its own entities (local master only). "
        "postgres: the same rows in one PostgreSQL table per checkpoint at scoring.state_url, which every "
        "executor reaches (any master). spark: Spark's RocksDB state store, which moves every bucket's "
        "whole state each micro-batch (cost grows with the state). auto: sqlite on a local master, else "
        "postgres when scoring.state_url is set, else spark. A checkpoint keeps the store it started with.",
    )
    state_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/database of the postgres entity state store "
        "(special characters in the password percent-encoded; a secret: set it in the YAML file or "
        "RTML_SCORING__STATE_URL, not on a command line). `rtml up --profile cluster` sets it to its "
        "own server.",
    )
    quarantine_raw: Literal["encrypt", "drop", "keep"] | None = Field(
        default=None,
        description="Quarantined payloads rtml cannot pseudonymise (all of them when not pseudonymising). "
        "Default: encrypt when pseudonymising, else keep.",
    )
    quarantine_key: SecretStr | None = Field(
        default=None, description="Fernet key of encrypted payloads. Default: derived from pseudonym_key."
    )

    @property
    def raw_payloads(self) -> str:
        """The quarantine_raw policy in effect."""
        return self.quarantine_raw or ("encrypt" if self.pseudonymise_entities else "keep")

    @model_validator(mode="after")
    def _key_when_pseudonymising(self) -> ScoringSettings:
        if self.pseudonymise_entities and not self.pseudonym_key:
            raise ValueError(
                "pseudonymise_entities needs scoring.pseudonym_key (set RTML_SCORING__PSEUDONYM_KEY)"
            )
        if self.raw_payloads == "encrypt" and not (self.quarantine_key or self.pseudonym_key):
            raise ValueError(
                "quarantine_raw: encrypt needs scoring.quarantine_key (set RTML_SCORING__QUARANTINE_KEY)"
            )
        if self.quarantine_key:
            import base64
            import binascii

            try:
                ok = len(base64.urlsafe_b64decode(self.quarantine_key.get_secret_value())) == 32
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                raise ValueError(
                    "quarantine_key must be a Fernet key: 32 url-safe base64-encoded bytes (make one with "
                    "cryptography.fernet.Fernet.generate_key())"
                )
        return self


class PromotionSettings(_Section):
    """Champion/challenger thresholds (data, not code)."""

    margin: float = Field(
        default=0.0, ge=0, description="Challenger must beat champion + margin on every metric."
    )
    precision_floor: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Precision a challenger must reach to replace a champion whose precision is undefined "
        "on the holdout (it flagged nothing).",
    )
    min_holdout: int = Field(default=500, ge=1)
    min_positives: int = Field(default=20, ge=1)
    bootstrap_samples: int = Field(default=200, ge=10)
    confidence: float = Field(
        default=0.95,
        ge=0.5,
        lt=1,
        description="Share of paired bootstrap resamples in which the challenger must beat the champion, "
        "on every metric.",
    )
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1, description="Newest slice of the window.")
    validation_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Newest slice of the training part on which a challenger's decision threshold is "
        "chosen (not learned from until the next retrain); 0 = chosen on the training rows.",
    )
    shadow: bool = Field(
        default=False,
        description="After each retrain decision, the best candidate that was not promoted becomes "
        "@shadow (audited like `rtml shadow`); a promotion clears a @shadow that is now the champion "
        "or older.",
    )
    evidence: Literal["holdout", "shadow", "both"] = Field(
        default="holdout",
        description="What promotes a version: holdout (the challenger's paired-bootstrap decision on the "
        "round's holdout), shadow (the current @shadow beats the champion on live labelled events, "
        "same rule and thresholds), both (the @shadow's own holdout decision against this champion "
        "and the live one).",
    )
    allow_unaudited_moves: bool = Field(
        default=False,
        description="Let the scoring job follow a @champion moved around rtml (no audit record).",
    )
    lock_timeout_s: float = Field(
        default=120.0, gt=0, description="Wait at most this for the promotion lock."
    )


class ModelSettings(_Section):
    """Which learner family new models use (models/learners/families.py) and its constructor arguments."""

    # Not a Literal: the families are the registered Learner subclasses (rtml.models.learners), which
    # this bottom layer may not import; make_learner reports an unknown name in one line.
    family: str = Field(
        default="sgd_logistic",
        min_length=1,
        description="A registered learner family: the `family` of a Learner subclass, built-in or "
        "third-party (listed by rtml.models.learners.families.FAMILIES).",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="e.g. {grace_period: 100} for a tree.")


class RetrainSettings(_Section):
    mode: Literal["incremental", "full"] = "incremental"
    sliding_window: str = Field(default="7d", description="Training window of a full retrain.")
    min_new_rows: int = Field(default=1000, ge=1, description="Skip a retrain with fewer new labelled rows.")
    schedule_cron: str = "*/15 * * * *"
    labels_schedule_cron: str = Field(
        default="*/5 * * * *", description="Schedule of rtml-labels, the labelled table's one writer."
    )
    candidates: list[str] | None = Field(
        default=None,
        description="Challengers per retrain, all trained on the same window and judged on the same "
        "holdout: continue (the champion trained further), fresh (a new model.family learner on the "
        "window only: adapts after a drift), fresh:<family>. The best that beats the champion is "
        "promoted; the others are registered and tagged as candidates of that decision. Default: "
        "[continue] in incremental mode, [fresh] in full mode.",
    )

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if not re.fullmatch(r"continue|fresh(:[A-Za-z_]\w*)?", entry):
                raise ValueError(f"unknown candidate '{entry}' (use continue, fresh or fresh:<family>)")
        if value is not None and not value:
            raise ValueError("name at least one candidate")
        return value

    epochs: int | None = Field(
        default=None,
        ge=1,
        le=50,
        description="Passes over a candidate's training rows, shuffled each pass. Default: the "
        "family's own (2; hoeffding_tree 5: a tree learned from the few hundred rows after a drift "
        "needs more passes than a linear model).",
    )
    fresh_since_change: bool = Field(
        default=True,
        description="Fresh candidates train (and choose their threshold) only on the window's rows "
        "after a change in the champion's labelled error stream (River ADWIN), when at least "
        "change_min_rows remain; continue keeps the whole window; the holdout is the same for all "
        "(after a change too recent to train after, it moves to the newest rows after the change).",
    )
    change_min_rows: int = Field(
        default=500, ge=1, description="Fewest rows after a detected change for a fresh candidate."
    )
    change_delta: float = Field(
        default=0.002, gt=0, lt=1, description="ADWIN's confidence parameter on the champion's residuals."
    )
    window_limit: str = Field(
        default="7d",
        description="An incremental window starts at most this much event time before the newest "
        "labelled event, also after rejected rounds (which leave the champion's watermark behind).",
    )


class Settings(BaseSettings):
    """All rtml settings. Build with :func:`load_settings` in entry points, never at import."""

    model_config = SettingsConfigDict(
        env_prefix="RTML_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    host: str = Field(default="127.0.0.1", description="Bind address of the embedded services.")
    state_dir: Path = Path(".rtml")
    spec: Path | None = Field(default=None, description="Stream spec YAML; default: card transactions.")
    kafka: KafkaSettings = KafkaSettings()
    mlflow: MlflowSettings = MlflowSettings()
    prefect: PrefectSettings = PrefectSettings()
    spark: SparkSettings = SparkSettings()
    ports: PortSettings = PortSettings()
    scoring: ScoringSettings = ScoringSettings()
    model: ModelSettings = ModelSettings()
    promotion: PromotionSettings = PromotionSettings()
    retrain: RetrainSettings = RetrainSettings()
    quality: QualitySettings = QualitySettings()
    drift: DriftSettings = DriftSettings()
    alerts: AlertSettings = AlertSettings()
    metrics: MetricsSettings = MetricsSettings()
    cluster: ClusterSettings = ClusterSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    # Effective endpoints -------------------------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers or f"{self.host}:{self.ports.kafka}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"http://{self.host}:{self.ports.mlflow}"

    @property
    def prefect_api_url(self) -> str:
        return self.prefect.api_url or f"http://{self.host}:{self.ports.prefect}/api"

    @property
    def checkpoint_root(self) -> Path:
        return self.spark.checkpoint_root or self.state_dir / "checkpoints"

    @property
    def sink_root(self) -> Path:
        return self.spark.sink_root or self.state_dir / "sink"

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain JSON-able data with every secret masked."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_YAML_DATA.get() or {})


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}:{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of settings")
    return data


def _unknown_env_keys() -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    bad = []
    for key in os.environ:
        if key.startswith("RTML_") and key[5:].split("__")[0] not in known:
            bad.append(key)
    return sorted(bad)


def format_validation_error(exc: ValidationError, source: str = "") -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(settings)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    suffix = f" (in {source})" if source else ""
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"config error: {key}: {msg}{suffix}{more}"


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    use_default_file: bool = True,
) -> Settings:
    """Build settings from flags, environment, YAML and defaults; raise ConfigError on bad input."""
    path = config_file
    if path is None and use_default_file and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    data = _read_yaml(path) if path is not None else {}
    bad_env = _unknown_env_keys()
    if bad_env:
        raise ConfigError(f"config error: {bad_env[0]}: unknown setting (environment)")
    token = _YAML_DATA.set(data)
    try:
        settings = Settings(**_drop_none(dict(overrides or {})))
        profile = read_profile(settings.state_dir)
        if profile and isinstance(profile.get("settings"), dict):
            # a running profile's endpoints (rtml up --profile): below the file, env and flags
            _YAML_DATA.set(merged_under(profile["settings"], data))
            settings = Settings(**_drop_none(dict(overrides or {})))
        return settings
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path) if path else "")) from None
    finally:
        _YAML_DATA.reset(token)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def public_overrides(settings: Settings) -> dict[str, Any]:
    """Non-default settings as JSON-able overrides, secrets left out (they travel in the environment).

    >>> s = load_settings(overrides={"alerts": {"webhook_url": "https://hook"}, "ports": {"kafka": 1}},
    ...                   use_default_file=False)
    >>> public_overrides(s)
    {'ports': {'kafka': 1}}
    """

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "conf":
                v = strip(v)
                if v:
                    out[k] = v
            elif v != "**********":
                out[k] = v
        return out

    return strip(settings.model_dump(mode="json", exclude_defaults=True))
