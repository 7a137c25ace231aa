"""Stream spec: the declared schema of a user's event stream.

Everything downstream (validation, features, models, generator) reads column names from here;
nothing hard-codes the fraud columns.

>>> spec = load_spec()
>>> spec.name, spec.task, spec.entity_key
('card_transactions', 'classification', 'card_id')
>>> "amount" in spec.numeric_names
True
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rtml.infra.config.settings import ConfigError, format_validation_error

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
UNKNOWN_CATEGORY = "__unknown__"
# The derived time features' units: learners scale them by at least one unit (an hour, a day). A
# short history can hold nearly one value of the hour (a single row past the hour's end among
# thousands), and the next hour's events then sat dozens of standard deviations away.
TIME_FEATURE_MIN_SCALE = {"event_hour": 1.0, "event_dayofweek": 1.0}
# Columns rtml adds beside the event's own (Kafka record, score rows, sink tables, labelled table):
# a declared field with one of these names was overwritten, dropped or failed the sink write.
RESERVED_FIELDS = frozenset(
    {
        *("_event_ms", "_reason", "_bucket", "key", "value", "topic", "partition", "offset", "timestamp"),
        *("score", "decision", "model_version", "scored_at_ms", "latency_ms", "kafka_timestamp_ms"),
        *("shadow_version", "shadow_score", "shadow_decision", "batch_id", "event_date"),
        *("label_state", "labelled_at_ms"),
    }
)
RESERVED_PREFIXES = ("explain_",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    name: str
    type: Literal["double", "long", "string", "boolean"]
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    on_unknown: Literal["map", "reject"] = Field(
        default="map", description=f"Unseen category: map to '{UNKNOWN_CATEGORY}', or quarantine the event."
    )
    required: bool = True

    @field_validator("name")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"'{v}' must be an identifier (letters, digits, underscore)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.categories is not None and self.type != "string":
            raise ValueError(f"feature {self.name}: categories only apply to type 'string'")
        if (self.min is not None or self.max is not None) and self.type not in ("double", "long"):
            raise ValueError(f"feature {self.name}: min/max only apply to numeric types")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name}: min > max")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.type in ("double", "long", "boolean")


class LabelSpec(_Strict):
    field: str
    type: Literal["long", "double", "string", "boolean"] = "long"
    positive: int | float | str | bool = 1
    horizon: str = Field(default="7d", description="How long after the event a late label is accepted.")
    unlabelled_after_horizon: Literal["negative", "drop"] = "negative"


class AggregateSpec(_Strict):
    """Per-entity rolling aggregates over event-time windows, kept in Spark state."""

    windows: list[str] = ["1h", "24h"]
    sum_of: str | None = Field(default=None, description="Numeric feature summed per window.")


class StreamSpec(_Strict):
    name: str
    task: Literal["classification", "regression", "anomaly"] = "classification"
    event_id: str
    event_time: str
    event_time_format: Literal["iso8601", "epoch_ms", "epoch_s"] = Field(
        default="iso8601",
        description="iso8601 string, or a JSON number: epoch_ms (integer milliseconds) or epoch_s "
        "(seconds, fractions allowed).",
    )
    entity_key: str
    features: list[FeatureSpec]
    label: LabelSpec | None = None
    aggregates: AggregateSpec | None = None
    time_features: list[Literal["hour", "dayofweek"]] = []
    extra_fields: Literal["reject", "ignore"] = "reject"
    max_future_seconds: int = Field(default=300, ge=0)
    decision_threshold: float = Field(default=0.5, ge=0, le=1)

    @property
    def event_time_type(self) -> str:
        """Spark type of the event-time field as it arrives: string (ISO 8601), bigint (ms), double (s)."""
        return {"epoch_ms": "bigint", "epoch_s": "double"}.get(self.event_time_format, "string")

    @model_validator(mode="after")
    def _names(self) -> StreamSpec:
        names = [self.event_id, self.event_time, self.entity_key, *[f.name for f in self.features]]
        for n in names:
            if not _NAME.match(n):
                raise ValueError(f"field '{n}' must be an identifier")
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"field(s) declared twice: {sorted(dupes)}")
        declared = [*names, *([self.label.field] if self.label else [])]
        derived = {*(f"event_{t}" for t in self.time_features), *self.aggregate_names}
        clash = sorted(set(declared) & derived)
        if clash:
            raise ValueError(
                f"field(s) {clash} take the name of a derived feature (time feature or aggregate)"
            )
        reserved = sorted(n for n in declared if n in RESERVED_FIELDS or n.startswith(RESERVED_PREFIXES))
        if reserved:
            raise ValueError(
                f"field(s) {reserved} take the name of a column rtml adds (score, decision, "
                "model_version, event_date, ...)"
            )
        if self.label and self.label.field in names:
            raise ValueError(f"label field '{self.label.field}' is also declared as a feature")
        if self.aggregates and self.aggregates.sum_of and self.aggregates.sum_of not in self.numeric_names:
            raise ValueError(f"aggregates.sum_of '{self.aggregates.sum_of}' is not a numeric feature")
        if self.task in ("classification", "regression") and self.label is None:
            raise ValueError(f"task '{self.task}' needs a label")
        return self

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.features if f.is_numeric]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.features if not f.is_numeric]

    @property
    def event_fields(self) -> list[str]:
        """Fields an event on the events topic may carry."""
        return [self.event_id, self.event_time, self.entity_key, *[f.name for f in self.features]]

    @property
    def aggregate_names(self) -> list[str]:
        if not self.aggregates:
            return []
        out = []
        for w in self.aggregates.windows:
            out.append(f"{self.entity_key}_count_{w}")
            if self.aggregates.sum_of:
                out.append(f"{self.entity_key}_{self.aggregates.sum_of}_sum_{w}")
        return out

    @property
    def model_numeric_inputs(self) -> list[str]:
        """Numeric model inputs: declared numeric features, time features, aggregates."""
        return [*self.numeric_names, *[f"event_{t}" for t in self.time_features], *self.aggregate_names]

    @property
    def model_inputs(self) -> list[str]:
        """Every model input column, in the order models see them."""
        return [*self.model_numeric_inputs, *self.categorical_names]

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def parse_duration_seconds(text: str) -> int:
    """'90s', '15m', '1h', '7d' -> seconds.

    >>> parse_duration_seconds("15m")
    900
    """
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not m:
        raise ValueError(f"bad duration '{text}' (use e.g. 30s, 15m, 1h, 7d)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def default_spec_path() -> Path:
    return Path(str(importlib.resources.files("rtml.infra.config") / "specs" / "card_transactions.yaml"))


def load_spec(path: Path | None = None) -> StreamSpec:
    """Load and validate a stream spec (default: card transactions); ConfigError on bad input."""
    path = path or default_spec_path()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"spec error: {path}: not found") from None
    except yaml.YAMLError:
        raise ConfigError(f"spec error: {path}: not valid YAML") from None
    try:
        spec = StreamSpec.model_validate(data)
        if spec.aggregates:
            for w in spec.aggregates.windows:
                parse_duration_seconds(w)
        if spec.label:
            parse_duration_seconds(spec.label.horizon)
        return spec
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, str(path)).replace("config error", "spec error")
        ) from None
    except ValueError as exc:
        raise ConfigError(f"spec error: {exc} (in {path})") from None
