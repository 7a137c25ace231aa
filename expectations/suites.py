"""Great Expectations suites, generated from the stream spec and kept under version control.

Three suites per spec: ``raw_events`` (every event on the stream), ``training_batch`` (a window of
labelled events before it is trained on) and ``scores`` (what the scoring job wrote). Bounds
known only at run time -- now, the champion's reference distribution, the settings -- are suite
parameters (``{"$PARAMETER": name}``) filled in by :func:`parameters`.

Suites live as JSON in ``expectations/suite_files/<spec>/<suite>.json``; ``rtml expectations generate``
rewrites the generated part and keeps every expectation whose ``meta`` has ``"rtml": "hand"``.

>>> from rtml.infra.config.spec import load_spec
>>> suite = generate(load_spec(), "scores")
>>> [e["type"] for e in suite["expectations"]][:2]
['expect_column_values_to_not_be_null', 'expect_column_values_to_be_between']
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.spec import StreamSpec, parse_duration_seconds

SUITES = ("raw_events", "training_batch", "scores")
SHIPPED = Path(__file__).parent / "suite_files"
NUMERIC_TYPES = ["float64", "float32", "int64", "int32", "Float64", "Int64"]
_BIG = 1e300  # "unbounded" for a parameter without a reference
UNBOUNDED = _BIG


def _e(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"rtml": "generated"}}


def _features(spec: StreamSpec, training: bool) -> list[dict[str, Any]]:
    out = []
    for f in spec.features:
        c = f.name
        if f.required:
            out.append(_e("expect_column_values_to_not_be_null", column=c, mostly={"$PARAMETER": "not_null"}))
        if f.type in ("double", "long"):
            out.append(_e("expect_column_values_to_be_in_type_list", column=c, type_list=NUMERIC_TYPES))
            if f.min is not None or f.max is not None:
                out.append(
                    _e("expect_column_values_to_be_between", column=c, min_value=f.min, max_value=f.max)
                )
            if training:
                out.append(
                    _e(
                        "expect_column_median_to_be_between",
                        column=c,
                        min_value={"$PARAMETER": f"{c}_median_min"},
                        max_value={"$PARAMETER": f"{c}_median_max"},
                    )
                )
        elif f.type == "boolean":
            out.append(_e("expect_column_values_to_be_in_type_list", column=c, type_list=["bool", "boolean"]))
        elif f.categories:
            mostly = 1.0 if f.on_unknown == "reject" else 0.99
            out.append(
                _e("expect_column_values_to_be_in_set", column=c, value_set=f.categories, mostly=mostly)
            )
    return out


def _identity(spec: StreamSpec) -> list[dict[str, Any]]:
    return [
        _e("expect_column_values_to_not_be_null", column=spec.event_id),
        _e("expect_column_values_to_be_unique", column=spec.event_id),
        _e("expect_column_values_to_not_be_null", column=spec.entity_key),
    ]


LABEL_PARAMETERS = (
    "label_low_cut",
    "label_high_cut",
    "label_low_reference",
    "label_high_reference",
    "label_low_tolerance",
    "label_high_tolerance",
    "label_alpha",
    "label_min_share",
)


def label_expectation(spec: StreamSpec) -> dict[str, Any]:
    """Labels against the champion's confident scores (expectations/label_consistency.py)."""
    assert spec.label is not None
    return _e(
        "expect_labels_to_agree_with_champion",
        label_column=spec.label.field,
        score_column="_champion_score",
        positive=spec.label.positive,
        **{name.removeprefix("label_"): {"$PARAMETER": name} for name in LABEL_PARAMETERS},
    )


def generate(spec: StreamSpec, suite: str) -> dict[str, Any]:
    """The generated suite as GE 1.x suite JSON."""
    if suite == "raw_events":
        exact = spec.extra_fields == "reject"
        exps = [
            _e(
                "expect_table_columns_to_match_set",
                column_set=[*spec.event_fields, EVENT_MS],
                exact_match=exact,
            ),
            *_identity(spec),
            _e("expect_column_values_to_not_be_null", column=EVENT_MS),
            _e(
                "expect_column_values_to_be_between",
                column=EVENT_MS,
                min_value=0,
                max_value={"$PARAMETER": "max_event_ms"},
            ),
            *_features(spec, training=False),
        ]
    elif suite == "training_batch":
        if spec.label is None:
            raise ValueError(f"spec '{spec.name}' has no label: no training_batch suite")
        lab = spec.label.field
        values = [spec.label.positive, 0] if isinstance(spec.label.positive, int) else [spec.label.positive]
        label_check = (
            _e("expect_column_values_to_be_in_type_list", column=lab, type_list=NUMERIC_TYPES)
            if spec.task == "regression"
            else _e("expect_column_values_to_be_in_set", column=lab, value_set=values)
        )
        exps = [
            _e("expect_table_row_count_to_be_between", min_value={"$PARAMETER": "min_rows"}),
            *_identity(spec),
            _e("expect_column_values_to_not_be_null", column=lab),
            label_check,
            _e(
                "expect_column_values_to_be_between",
                column=EVENT_MS,
                min_value={"$PARAMETER": "min_event_ms"},
                max_value={"$PARAMETER": "max_event_ms"},
            ),
            *_features(spec, training=True),
        ]
        if spec.task != "regression" and isinstance(spec.label.positive, int) and spec.label.positive == 1:
            exps.insert(
                5,
                _e(
                    "expect_column_mean_to_be_between",
                    column=lab,
                    min_value={"$PARAMETER": "positive_rate_min"},
                    max_value={"$PARAMETER": "positive_rate_max"},
                ),
            )
        if spec.task != "regression":
            exps.append(label_expectation(spec))
    elif suite == "scores":
        exps = [
            _e("expect_column_values_to_not_be_null", column="score"),
            _e("expect_column_values_to_be_between", column="score", min_value=0.0, max_value=1.0),
            _e("expect_column_values_to_not_be_null", column="model_version"),
            _e("expect_column_values_to_be_in_set", column="decision", value_set=[0, 1]),
            _e("expect_column_values_to_not_be_null", column=spec.event_id),
            _e("expect_column_values_to_be_unique", column=spec.event_id),
        ]
        if spec.task == "regression":  # a predicted value, not a probability; no decisions
            exps = [exps[0], exps[2], exps[4], exps[5]]
    else:
        raise ValueError(f"unknown suite '{suite}' (choose from {', '.join(SUITES)})")
    return {"name": f"{spec.name}.{suite}", "expectations": exps, "meta": {"rtml_spec": spec.name}}


def suite_path(spec: StreamSpec, suite: str, suites_dir: Path | None = None) -> Path:
    return (suites_dir or SHIPPED) / spec.name / f"{suite}.json"


def load_suite(spec: StreamSpec, suite: str, suites_dir: Path | None = None) -> dict[str, Any]:
    """The suite under version control for this spec, or the generated one if there is none."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite '{suite}' (choose from {', '.join(SUITES)})")
    path = suite_path(spec, suite, suites_dir)
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return generate(spec, suite)


def write_suites(spec: StreamSpec, suites_dir: Path | None = None) -> list[Path]:
    """(Re)generate the suites of a spec, keeping hand-written expectations (meta rtml=hand)."""
    written = []
    for suite in SUITES:
        if suite == "training_batch" and spec.label is None:
            continue
        path = suite_path(spec, suite, suites_dir)
        fresh = generate(spec, suite)
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            fresh["expectations"] += [
                e for e in old["expectations"] if e.get("meta", {}).get("rtml") == "hand"
            ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fresh, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def positive_rate_bounds(quality: Any, reference: dict[str, Any] | None) -> dict[str, float]:
    """A training window's positive-rate bounds: the settings when given, else relative to the
    champion's reference rate (the data it was built on), not a fraud constant; without a reference,
    no bound.

    >>> from rtml.infra.config.settings import Settings
    >>> positive_rate_bounds(Settings().quality, {"positive_rate": 0.015})
    {'positive_rate_min': 0.0015, 'positive_rate_max': 0.15}
    >>> positive_rate_bounds(Settings().quality, {"positive_rate": 0.5})
    {'positive_rate_min': 0.05, 'positive_rate_max': 1.0}
    """
    rate = (reference or {}).get("positive_rate")
    ratio = quality.positive_rate_ratio
    lo = quality.positive_rate_min
    hi = quality.positive_rate_max
    if lo is None:
        lo = rate / ratio if rate else 0.0
    if hi is None:
        hi = min(1.0, rate * ratio) if rate else 1.0
    return {"positive_rate_min": round(float(lo), 10), "positive_rate_max": round(float(hi), 10)}


def parameters(
    spec: StreamSpec, settings: Any, reference: dict[str, Any] | None = None, now_ms: int | None = None
) -> dict[str, Any]:
    """Run-time values of the suite parameters: clock, settings, champion's reference profile."""
    from rtml.models.monitoring.profile import label_reference, quantile_of

    q = settings.quality
    now_ms = now_ms or int(time.time() * 1000)
    out: dict[str, Any] = {
        "not_null": 1.0 - q.null_tolerance,
        "min_rows": q.min_training_rows,
        **positive_rate_bounds(q, reference),
        "max_event_ms": now_ms + spec.max_future_seconds * 1000,
        "min_event_ms": now_ms - parse_duration_seconds(q.max_event_age) * 1000,
    }
    label_ref = label_reference(reference, q.label_low_quantile, q.label_high_quantile)
    out |= {
        "label_low_cut": label_ref["low_cut"] if label_ref else -_BIG,
        "label_high_cut": label_ref["high_cut"] if label_ref else _BIG,
        "label_low_reference": label_ref["low_reference"] if label_ref else 0.0,
        "label_high_reference": label_ref["high_reference"] if label_ref else 0.0,
        "label_low_tolerance": q.label_low_tolerance,
        "label_high_tolerance": q.label_high_tolerance,
        "label_alpha": q.label_alpha,
        "label_min_share": q.label_min_share,
    }
    numeric_ref = (reference or {}).get("numeric", {})
    lo, hi = q.median_band
    for f in spec.features:
        ref = numeric_ref.get(f.name)
        has = ref is not None and "quantiles" in ref
        out[f"{f.name}_median_min"] = quantile_of(ref, lo) if has else -_BIG
        out[f"{f.name}_median_max"] = quantile_of(ref, hi) if has else _BIG
    return out
