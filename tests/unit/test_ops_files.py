"""The shipped Prometheus alert rules and Grafana dashboard (infra/ops/) use only what the job exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from rtml.infra.config.settings import load_settings
from rtml.pipelines.metrics import ScoringMetrics

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "infra" / "ops"
# label names Prometheus itself attaches to every scraped series, and the histogram bucket label
TARGET_LABELS = {"job", "instance", "le"}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
PROMQL_WORDS |= {"offset", "bool", "inf", "nan"}
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


def exported() -> tuple[set[str], set[str]]:
    """Series names and label names the job exposes (every labelled metric given a child first)."""
    m = ScoringMetrics(load_settings(use_default_file=False))
    m.record_batch(
        {
            "read": 3,
            "scored": 2,
            "by_reason": {"wrong_type:amount": 1},
            "model_version": "1",
            "seconds": 0.5,
            "ended_at_ms": 1,
            "offset_resets": [
                {"policy": "earliest", "resets": [{"topic": "e", "partition": 0, "skipped": 4}]}
            ],
        },
        np.array([5.0, 9.0]),
    )
    m.set_version("shadow", "2")
    m.ends = {0: 5}
    m._update_lag()
    m.lag_failures.inc()
    names, labels = set(), set()
    for family in m.registry.collect():
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    return names, labels


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, matchers, ranges and label lists removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    out = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end() :].lstrip().startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue  # a function or an operator keyword
        out.add(m.group(0))
    return out


def grouping_labels(expr: str) -> set[str]:
    """Label names used in by/without/on/ignoring lists and in label matchers."""
    out = set()
    for lst in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        out |= {x.strip() for x in lst.split(",") if x.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        out |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    return out


def test_metric_name_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(x_bucket{job="a", le!="1e3"}[5m]))) > 1e-3 '
        "and on (instance) (time() - max(y_seconds offset 5m) > 600)"
    )
    assert metric_names(expr) == {"x_bucket", "y_seconds"}
    assert grouping_labels(expr) == {"instance", "le", "job"}


def _rules() -> list[dict]:
    doc = yaml.safe_load((OPS / "prometheus-rules.yaml").read_text())
    assert set(doc) == {"groups"} and doc["groups"], "a Prometheus rule file has one key: groups"
    group_names = [g["name"] for g in doc["groups"]]
    assert len(group_names) == len(set(group_names)), "group names must be unique"
    rules = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"]
        rules += group["rules"]
    return rules


def test_alert_rules_are_valid_prometheus_rule_groups() -> None:
    rules = _rules()
    alerts = [r["alert"] for r in rules]
    assert len(alerts) == len(set(alerts)), "alert names must be unique"
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, r["alert"]
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", r["alert"])
        assert isinstance(r["expr"], str) and r["expr"].strip()
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]
        if "for" in r:
            assert DURATION.match(str(r["for"])), (r["alert"], r["for"])
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert r["annotations"]["summary"].strip() and r["annotations"]["description"].strip()


def test_alert_rules_cover_the_pager_cases_and_use_only_exported_metrics() -> None:
    names, labels = exported()
    rules = _rules()
    used = set()
    for r in rules:
        found = metric_names(r["expr"])
        assert found, f"{r['alert']}: no metric in {r['expr']!r}"
        assert found <= names, f"{r['alert']}: not exported by the job: {sorted(found - names)}"
        assert grouping_labels(r["expr"]) <= labels | TARGET_LABELS, r["alert"]
        used |= found
    # lag growing, no batch for N minutes, quarantine rate, latency p99
    assert {
        "rtml_consumer_lag_events",
        "rtml_last_batch_timestamp_seconds",
        "rtml_events_quarantined_total",
        "rtml_produce_to_scored_latency_seconds_bucket",
    } <= used


def test_every_alert_has_a_promtool_unit_test() -> None:
    tests = yaml.safe_load((OPS / "prometheus-rules.test.yaml").read_text())
    assert tests["rule_files"] == ["prometheus-rules.yaml"]
    tested = {c["alertname"] for t in tests["tests"] for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert tested == {r["alert"] for r in _rules()}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)")
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    for args in (
        ("check", "rules", "prometheus-rules.yaml"),
        ("test", "rules", "prometheus-rules.test.yaml"),
    ):
        proc = subprocess.run(["promtool", *args], cwd=OPS, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_every_alert_is_explained_for_the_on_call_engineer_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Operating rtml", 1)[1].split("\n## ", 1)[0]
    for r in _rules():
        assert f"`{r['alert']}`" in section, f"README 'Operating rtml' does not explain {r['alert']}"


def _dashboard_exprs(node: object) -> list[str]:
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            if k in ("expr", "definition") and isinstance(v, str):
                out.append(v)
            else:
                out += _dashboard_exprs(v)
        return out
    if isinstance(node, list):
        return [e for x in node for e in _dashboard_exprs(x)]
    return []


def test_dashboard_references_only_exported_metrics_and_shows_them_all() -> None:
    names, labels = exported()
    dash = json.loads((OPS / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = _dashboard_exprs(dash)
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        expr = re.sub(r"label_values\(([^,]+),[^)]*\)", r"\1", expr)  # Grafana's variable query
        found = metric_names(expr)
        assert found, expr
        assert found <= names, f"not exported by the job: {sorted(found - names)} in {expr!r}"
        assert grouping_labels(expr) <= labels | TARGET_LABELS, expr
        used |= found
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in names if n.startswith("rtml_")}
    shown = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in used}
    assert families <= shown, f"exported but on no panel: {sorted(families - shown)}"


@pytest.mark.parametrize(
    "expr", ["rate(rtml_nope_total[5m])", 'sum by (nope) (rtml_events_read_total{a="b"})']
)
def test_a_wrong_name_is_caught(expr: str) -> None:
    names, labels = exported()
    assert not (metric_names(expr) <= names) or not (grouping_labels(expr) <= labels | TARGET_LABELS)
