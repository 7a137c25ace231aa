"""Stream spec loading and validation (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtml.infra.config.settings import ConfigError
from rtml.infra.config.spec import load_spec, parse_duration_seconds


def test_default_spec_declares_the_fraud_stream() -> None:
    spec = load_spec()
    assert spec.task == "classification"
    assert spec.label is not None and spec.label.field == "is_fraud"
    assert set(spec.categorical_names) == {"merchant_category", "channel"}
    assert "card_id_count_10m" in spec.aggregate_names
    assert spec.event_fields[:3] == ["transaction_id", "event_time", "card_id"]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


BASE = """
name: s
task: regression
event_id: id
event_time: ts
entity_key: sku
label: {field: price, type: double}
features:
"""


def test_user_spec_without_fraud_columns(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, BASE + "  - {name: demand, type: double, min: 0}\n"))
    assert spec.numeric_names == ["demand"]
    assert spec.aggregate_names == []


@pytest.mark.parametrize(
    ("features", "needle"),
    [
        ("  - {name: demand, type: double, categories: [a]}\n", "categories only apply"),
        ("  - {name: demand, type: string, min: 1}\n", "min/max only apply"),
        ("  - {name: demand, type: double}\n  - {name: demand, type: double}\n", "declared twice"),
        ("  - {name: 'bad name', type: double}\n", "identifier"),
        ("  - {name: demand, type: float}\n", "features.0.type"),
        ("  - {name: demand, type: double, colour: red}\n", "unknown setting"),
        (
            "  - {name: event_hour, type: double}\ntime_features: [hour]\n",
            "['event_hour'] take the name of a derived feature",
        ),
        ("  - {name: score, type: double}\n", "['score'] take the name of a column rtml adds"),
        ("  - {name: explain_base, type: double}\n", "['explain_base'] take the name of a column rtml adds"),
        (
            "  - {name: sku_count_1h, type: double}\naggregates: {windows: [1h]}\n",
            "['sku_count_1h'] take the name of a derived feature",
        ),
    ],
)
def test_bad_specs_are_rejected_with_reason(tmp_path: Path, features: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_spec(_write(tmp_path, BASE + features))
    assert needle in str(err.value)
    assert str(err.value).startswith("spec error")


def test_classification_needs_label(tmp_path: Path) -> None:
    text = BASE.replace("task: regression", "task: classification").replace(
        "label: {field: price, type: double}\n", ""
    )
    with pytest.raises(ConfigError, match="needs a label"):
        load_spec(_write(tmp_path, text + "  - {name: demand, type: double}\n"))


def test_durations() -> None:
    assert parse_duration_seconds("2d") == 172800
    with pytest.raises(ValueError):
        parse_duration_seconds("soon")


def test_epoch_seconds_event_time(tmp_path: Path) -> None:
    import pandas as pd

    from rtml.expectations.gate import prepare
    from rtml.features.featurise import event_ms_from_field

    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "pricing" / "spec.yaml")
    assert spec.event_time_format == "epoch_s" and spec.event_time_type == "double"
    secs = pd.Series([1764547200.0, 1764547200.25, 1764547201.5])
    assert event_ms_from_field(secs, spec).tolist() == [1764547200000, 1764547200250, 1764547201500]
    frame = pd.DataFrame({"event_time": [1764547200.25, "soon"]})
    assert prepare(frame, spec)["_event_ms"].tolist()[0] == 1764547200250
    assert pd.isna(prepare(frame, spec)["_event_ms"].tolist()[1])  # not a number: flagged, not guessed


def test_the_label_may_not_take_a_derived_or_reserved_name(tmp_path: Path) -> None:
    base = BASE.replace("label: {field: price, type: double}", "label: {field: %s, type: double}")
    features = "  - {name: demand, type: double}\n"
    with pytest.raises(ConfigError, match=r"\['event_hour'\] take the name of a derived feature"):
        load_spec(_write(tmp_path, base % "event_hour" + features + "time_features: [hour]\n"))
    with pytest.raises(ConfigError, match=r"\['decision'\] take the name of a column rtml adds"):
        load_spec(_write(tmp_path, base % "decision" + features))
    # without the hour as a time feature, a field of that name is the user's own
    assert load_spec(_write(tmp_path, BASE + "  - {name: event_hour, type: double}\n")).numeric_names == [
        "event_hour"
    ]
