"""Gate runner: validate a pandas or Spark DataFrame against a suite; publish the result.

Usable from any flow or job. :func:`validate` returns a typed :class:`GateResult` naming each
failed expectation; :func:`publish` stores the GE validation result (JSON) and rendered Data Docs
(HTML) as MLflow artifacts of a ``quality-<suite>`` run and, inside a Prefect run, a Prefect
markdown artifact.

>>> import pandas as pd
>>> from rtml.infra.config.settings import load_settings
>>> from rtml.infra.config.spec import load_spec
>>> frame = pd.DataFrame({"transaction_id": ["a", "a"], "score": [0.1, 1.5],
...                       "decision": [0, 1], "model_version": ["1", "1"]})
>>> r = validate(frame, "scores", load_spec(), load_settings(use_default_file=False), render=False)
>>> r.passed, r.failed_names()
(False, ['expect_column_values_to_be_between(score)', 'expect_column_values_to_be_unique(transaction_id)'])
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rtml.expectations.suites import UNBOUNDED, load_suite, parameters
from rtml.features.featurise import EVENT_MS
from rtml.infra.config.spec import StreamSpec

_CONTEXT: dict[str, Any] = {}
_LOCK = threading.Lock()


@dataclass
class Failure:
    expectation: str
    column: str | None
    observed: Any = None
    unexpected_percent: float | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.expectation}({self.column})" if self.column else self.expectation

    def describe(self) -> str:
        if self.error:
            return f"{self.name}: error {self.error}"
        if self.unexpected_percent is not None:
            return f"{self.name}: {self.unexpected_percent:.2f}% unexpected"
        return f"{self.name}: observed {self.observed}"


@dataclass
class GateResult:
    suite: str
    passed: bool
    rows: int
    evaluated: int
    failures: list[Failure]
    parameters: dict[str, Any]
    result_json: dict[str, Any] = field(repr=False)
    html: str | None = field(default=None, repr=False)
    mlflow_run_id: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def failed_names(self) -> list[str]:
        return [f.name for f in self.failures]

    def summary(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "passed": self.passed,
            "rows": self.rows,
            "evaluated": self.evaluated,
            "failed": [f.describe() for f in self.failures],
            "skipped": [f"{name}: {why}" for name, why in self.skipped.items()],
            "mlflow_run_id": self.mlflow_run_id,
        }


def _batch_definition() -> Any:
    """One ephemeral GE context per process, built on first use (never at import)."""
    if "bd" not in _CONTEXT:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = ctx.data_sources.add_pandas("rtml").add_dataframe_asset("frame")
        _CONTEXT["bd"] = asset.add_batch_definition_whole_dataframe("whole")
    return _CONTEXT["bd"]


def warm_up() -> None:
    """Build this process's GE context now (the first validation otherwise pays for it)."""
    with _LOCK:
        _batch_definition()


def prepare(frame: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    """Normalise a frame for the suites: add the parsed event time (``_event_ms``) when missing, and
    turn boolean features stored as model inputs (0.0 / 1.0 doubles, as the sinks keep them) back
    into booleans. Any other value leaves the column as it is, for the type check to catch."""
    out = frame
    for f in spec.features:
        col = frame.get(f.name)
        if f.type == "boolean" and col is not None and pd.api.types.is_float_dtype(col):
            known = col.dropna()
            if known.isin([0.0, 1.0]).all():
                flags = col.map({1.0: True, 0.0: False})  # GE types: numpy bool, not "boolean"
                out = out.assign(**{f.name: flags.astype(bool) if len(known) == len(col) else flags})
    if EVENT_MS in out or spec.event_time not in out:
        return out
    raw = out[spec.event_time]
    if spec.event_time_format == "epoch_ms":
        ms = pd.to_numeric(raw, errors="coerce")
    elif spec.event_time_format == "epoch_s":
        ms = (pd.to_numeric(raw, errors="coerce") * 1000).round()
    else:
        ts = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
        ms = pd.Series(ts.astype("int64") // 1_000_000, index=out.index).where(ts.notna())
    return out.assign(**{EVENT_MS: ms})


def column_mismatch(frame: pd.DataFrame, suite: str, spec: StreamSpec, suites_dir: Any = None) -> str | None:
    """One line naming the columns a suite needs that the frame lacks (and the frame's unknown ones),
    or None when every column the suite's expectations name is there.

    >>> from rtml.infra.config.spec import load_spec
    >>> column_mismatch(pd.DataFrame({"a": [1], "score": [0.5]}), "scores", load_spec())
    "missing column(s) needed by suite 'scores': model_version, decision, transaction_id; unexpected: a"
    """
    definition = load_suite(spec, suite, suites_dir)
    needed: list[str] = []
    known: set[str] = set(spec.event_fields)
    if spec.label is not None:
        known.add(spec.label.field)
    for e in definition["expectations"]:
        kwargs = e.get("kwargs", {})
        columns = [kwargs["column"]] if "column" in kwargs else []
        if e.get("type") == "expect_table_columns_to_match_set":
            known.update(kwargs.get("column_set") or [])
        columns = [spec.event_time if c == EVENT_MS else c for c in columns]  # prepare() derives it
        needed += [c for c in columns if c not in needed]
    known.update(needed)
    known.add(EVENT_MS)
    missing = [c for c in needed if c not in frame and not (c == spec.event_time and EVENT_MS in frame)]
    if not missing:
        return None
    unexpected = [str(c) for c in frame.columns if c not in known]
    return f"missing column(s) needed by suite '{suite}': {', '.join(missing)}" + (
        f"; unexpected: {', '.join(unexpected)}" if unexpected else ""
    )


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


HIGH_SIDE_SKIPPED = (
    "not checked for an anomaly model: its confident positives are unusual events, which a drift in "
    "legitimate traffic fills with negatives (confident negatives labelled positive are checked)"
)


def _anomaly_scores(champion: Any) -> bool:
    """Whether the champion's scores are anomaly scores (its learner declares the anomaly task).

    On the generator's drift with clean labels every k-means champion tried (4 histories) had 100% of
    its confident positives labelled negative; a 5% flip or swap of labels still failed the other side.
    """
    return "anomaly" in getattr(getattr(champion, "learner", None), "tasks", ())


def _label_check(
    frame: pd.DataFrame,
    definition: dict[str, Any],
    spec: StreamSpec,
    settings: Any,
    reference: dict[str, Any] | None,
    champion: Any,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, str], str | None]:
    """Add the champion's scores for the label-consistency expectation, or take the expectation out
    of the suite and say why (no champion given, checks off, a champion profile without labels).
    For an anomaly champion the confident-positive side is switched off in ``params`` and listed.
    Returns the frame, the suite, what was skipped, and why scoring failed (if it did)."""
    from rtml.expectations.label_consistency import EXPECTATION, SCORE_COLUMN, champion_scores
    from rtml.models.monitoring.profile import label_reference

    if not any(e["type"] == EXPECTATION for e in definition["expectations"]):
        return frame, definition, {}, None
    why = None
    if not settings.quality.label_check:
        why = "off (quality.label_check: false)"
    elif champion is None:
        why = "no champion model given to score the batch"
    elif label_reference(reference, 0.5, 0.5) is None:
        why = "the champion's reference profile has no label table (registered before label checks)"
    if why:
        kept = [e for e in definition["expectations"] if e["type"] != EXPECTATION]
        return frame, {**definition, "expectations": kept}, {EXPECTATION: why}, None
    try:
        scores = champion_scores(frame, spec, champion)
    except ValueError as exc:  # the expectation then sees no scored row and fails; the reason is kept
        return frame.assign(**{SCORE_COLUMN: float("nan")}), definition, {}, str(exc)
    skipped: dict[str, str] = {}
    if _anomaly_scores(champion):
        params["label_high_cut"] = UNBOUNDED  # no row is a confident positive
        skipped[f"{EXPECTATION} (confident positives)"] = HIGH_SIDE_SKIPPED
    return frame.assign(**{SCORE_COLUMN: scores}), definition, skipped, None


def validate(
    data: Any,
    suite: str,
    spec: StreamSpec,
    settings: Any,
    reference: dict[str, Any] | None = None,
    now_ms: int | None = None,
    render: bool = True,
    champion: Any = None,
) -> GateResult:
    """Run one suite over a pandas or Spark DataFrame (Spark frames are collected through Arrow).

    ``champion`` (a loaded model: ``learner`` + ``columns``) scores the rows for the label-consistency
    expectation of ``training_batch``; without it that expectation is skipped, and the result says so.
    """
    import great_expectations as gx

    from rtml.expectations.label_consistency import EXPECTATION as LABELS

    frame = data if isinstance(data, pd.DataFrame) else data.toArrow().to_pandas()
    frame = prepare(frame, spec)
    params = parameters(spec, settings, reference, now_ms)
    definition = load_suite(spec, suite, settings.quality.suites_dir)
    frame, definition, skipped, score_error = _label_check(
        frame, definition, spec, settings, reference, champion, params
    )
    ge_suite = gx.ExpectationSuite(**definition)
    with _LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(ge_suite, expectation_parameters=params, result_format="SUMMARY")
    failures = []
    for r in result.results:
        r.result = _plain(r.result)
        if r.success:
            continue
        info = r.exception_info or {}
        failures.append(
            Failure(
                expectation=r.expectation_config.type,
                column=r.expectation_config.kwargs.get("column"),
                observed=r.result.get("observed_value"),
                unexpected_percent=r.result.get("unexpected_percent"),
                error=(info.get("exception_message") or None) if info.get("raised_exception") else None,
            )
        )
        if score_error and r.expectation_config.type == LABELS:
            failures[-1].error = score_error
    html = None
    if render:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    return GateResult(
        suite=suite,
        passed=bool(result.success),
        rows=len(frame),
        evaluated=len(result.results),
        failures=failures,
        parameters=params,
        result_json=_plain(result.to_json_dict()),
        html=html,
        skipped=skipped,
    )


def _markdown(result: GateResult, where: str) -> str:
    lines = [
        f"### Data quality: `{result.suite}` -- {'PASSED' if result.passed else 'FAILED'}",
        f"{result.rows} rows, {result.evaluated} expectations, {len(result.failures)} failed. {where}",
        "",
        "| failed expectation | detail |",
        "|---|---|",
        *[f"| `{f.name}` | {f.describe().split(': ', 1)[-1]} |" for f in result.failures],
    ]
    return "\n".join(lines)


def publish(result: GateResult, settings: Any, tags: dict[str, str] | None = None) -> GateResult:
    """Store validation JSON + Data Docs HTML in MLflow; add a Prefect artifact inside a run."""
    import mlflow

    from rtml.infra.config.clients import configure_mlflow

    configure_mlflow(settings)
    mlflow.set_experiment(settings.mlflow.experiment)
    with mlflow.start_run(run_name=f"quality-{result.suite}") as run:
        mlflow.set_tags(
            {"rtml.quality.suite": result.suite, "rtml.quality.passed": str(result.passed), **(tags or {})}
        )
        mlflow.log_metrics(
            {
                "quality_rows": result.rows,
                "quality_failed": len(result.failures),
                "quality_evaluated": result.evaluated,
            }
        )
        mlflow.log_dict(result.result_json, f"quality/{result.suite}/validation_result.json")
        if result.html:
            mlflow.log_text(result.html, f"quality/{result.suite}/data_docs.html")
        mlflow.log_dict(result.summary(), f"quality/{result.suite}/summary.json")
    result.mlflow_run_id = run.info.run_id
    if _in_prefect_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            key=f"rtml-quality-{result.suite.replace('_', '-')}",
            markdown=_markdown(result, f"MLflow run `{run.info.run_id}` holds the Data Docs."),
            description=f"{result.suite}: {'passed' if result.passed else 'FAILED'}",
        )
    return result


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None
