"""Settings sections of the operational checks: data-quality gates, drift monitoring, alerting.

Thresholds are data: every bound a gate or a drift check applies is here, overridable like any
other setting (``RTML_QUALITY__POSITIVE_RATE_MAX=0.1``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class QualitySettings(_Section):
    """Great Expectations gates (expectations/)."""

    suites_dir: Path | None = Field(
        default=None, description="Suite JSON files; default: the suites shipped with rtml, else generated."
    )
    window: str = Field(default="15m", description="Scheduled quality check: the last window of scores.")
    schedule_cron: str = "*/10 * * * *"
    stream_every_batches: int = Field(
        default=10, ge=0, description="Stream gate: validate every K-th micro-batch (0 = off)."
    )
    min_training_rows: int = Field(default=500, ge=1)
    positive_rate_min: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest positive rate of a training window. Default: the champion's reference rate "
        "(its bootstrap/training data) divided by positive_rate_ratio.",
    )
    positive_rate_max: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Highest positive rate of a training window. Default: the reference rate times "
        "positive_rate_ratio (at most 1).",
    )
    positive_rate_ratio: float = Field(
        default=10.0, gt=1, description="How far a window's positive rate may stray from the reference's."
    )
    max_event_age: str = Field(default="14d", description="Training events older than this are stale.")
    null_tolerance: float = Field(default=0.01, ge=0, le=1, description="Fraction of nulls allowed.")
    median_band: tuple[float, float] = Field(
        default=(0.02, 0.98),
        description="A feature's median must lie between these quantiles of the champion's reference.",
    )
    label_check: bool = Field(
        default=True, description="Training gate: labels must agree with the champion's confident scores."
    )
    label_low_quantile: float = Field(
        default=0.8,
        ge=0.01,
        le=0.99,
        description="Confident negatives: rows the champion scores at or below this quantile of the scores "
        "it gave its reference negatives (whole percent).",
    )
    label_high_quantile: float = Field(
        default=0.5,
        ge=0.01,
        le=0.99,
        description="Confident positives: rows scored at or above this quantile of the scores of its "
        "reference positives (whole percent).",
    )
    label_low_tolerance: float = Field(
        default=0.015,
        ge=0,
        le=1,
        description="Share of confident negatives labelled positive allowed above the reference level "
        "(room for new fraud the champion misses: concept drift).",
    )
    label_high_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of confident positives labelled negative allowed above the reference level.",
    )
    label_alpha: float = Field(
        default=0.001, gt=0, lt=0.5, description="Significance of each one-sided binomial test."
    )
    label_min_share: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="Disagreements beyond the allowed level must also be at least this share of the "
        "window's rows to block it.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> QualitySettings:
        lo_rate, hi_rate = self.positive_rate_min, self.positive_rate_max
        if lo_rate is not None and hi_rate is not None and lo_rate > hi_rate:
            raise ValueError("positive_rate_min > positive_rate_max")
        lo, hi = self.median_band
        if not 0 <= lo < hi <= 1:
            raise ValueError("median_band must be two quantiles 0 <= lo < hi <= 1")
        for name in ("label_low_quantile", "label_high_quantile"):
            if abs(getattr(self, name) * 100 - round(getattr(self, name) * 100)) > 1e-9:
                raise ValueError(f"{name} must be a whole percent (0.01 .. 0.99)")
        return self


class DriftSettings(_Section):
    """Drift checks against the champion's reference profile (flows/drift.py)."""

    window: str = Field(default="15m", description="Recent window compared with the reference.")
    features: list[str] | None = Field(
        default=None, description="Features to watch; default: every feature the spec declares."
    )
    performance_window: str = Field(
        default="1d", description="Labelled events (by event time) judged for live performance."
    )
    min_events: int = Field(default=500, ge=10, description="Fewer events in the window: no verdict.")
    psi_warning: float = Field(default=0.1, gt=0)
    psi_critical: float = Field(default=0.25, gt=0)
    ks_statistic: float = Field(default=0.1, gt=0, le=1, description="KS distance counted as drift.")
    p_value: float = Field(default=0.001, gt=0, lt=1, description="KS / chi-square significance.")
    score_psi: float = Field(default=0.2, gt=0, description="PSI of the score distribution.")
    score_bands: list[float] = Field(
        default=[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9],
        description="Bin edges of the score PSI for scores in [0, 1] (others use reference deciles).",
    )
    performance_drop: float = Field(
        default=0.25, gt=0, lt=1, description="Relative drop of live P/R/F1 against the holdout figures."
    )
    min_labelled: int = Field(default=300, ge=10, description="Labelled events needed to judge performance.")
    adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    cooldown: str = Field(default="1h", description="One alert per (model, feature, kind) per cooldown.")
    retrain_on_drift: bool = Field(default=False, description="A drift alert also runs the retrain flow.")
    schedule_cron: str = "*/5 * * * *"

    @model_validator(mode="after")
    def _ordered(self) -> DriftSettings:
        if self.psi_warning > self.psi_critical:
            raise ValueError("psi_warning > psi_critical")
        return self


class AlertSettings(_Section):
    """Where drift and quality alerts go: a Prefect notification block, created from a webhook URL."""

    notification_block: str = Field(
        default="rtml-oncall",
        pattern="^[a-z0-9-]+$",
        description="Name of the Prefect notification block alerts are sent to (lowercase, digits, dashes).",
    )
    webhook_url: SecretStr | None = Field(
        default=None, description="Generic webhook for `rtml deploy` to create the block from (secret)."
    )
    min_severity: str = Field(default="warning", pattern="^(info|warning|critical)$")
    delivery_timeout: str = Field(
        default="30s",
        pattern=r"^\s*\d+\s*[smhd]\s*$",
        description="How long a sender waits for Prefect's record that a page went out (e.g. 30s).",
    )


class MetricsSettings(_Section):
    """Prometheus metrics of the scoring job (pipelines/metrics.py)."""

    host: str = Field(default="127.0.0.1", description="Bind address of the job's /metrics endpoint.")
    port: int = Field(default=19464, ge=0, le=65535, description="Port of /metrics; 0 = metrics off.")
    lag_interval_s: float = Field(
        default=10.0, gt=0, description="Seconds between two reads of the events topic's end offsets."
    )


class RetentionDays(_Section):
    """Days of event time each table keeps (None = keep everything). A value can only shorten a
    table down to what the label horizon, the retrain and drift windows and pending labels still
    need: a shorter one is clamped to that guard and reported (``rtml maintain``)."""

    scores: int | None = Field(default=None, ge=1, description="Scored events (by event day).")
    quarantine: int | None = Field(default=None, ge=1, description="Quarantined events (by quarantine day).")
    labels: int | None = Field(default=None, ge=1, description="Label messages (by the day they arrived).")
    labelled: int | None = Field(default=None, ge=1, description="The labelled table (by event day).")


class MaintenanceSettings(_Section):
    """Table maintenance (flow rtml-maintain, `rtml maintain`): compaction, retention, vacuum."""

    schedule_cron: str = Field(default="17 3 * * *", description="Schedule of rtml-maintain (daily).")
    retention_days: RetentionDays = Field(
        default_factory=RetentionDays, description="Per-table retention in days; default keep all."
    )
    small_file_mb: float = Field(
        default=16.0, gt=0, description="Files under this size are compacted when a partition has 2+ of them."
    )
    target_file_mb: float = Field(default=128.0, gt=0, description="Target size of compacted files.")
    vacuum_retain_hours: int = Field(
        default=168,
        ge=0,
        description="Files a table stopped referencing are deleted this long after (readers of older "
        "versions, time travel of a model's training window, need them until then).",
    )
