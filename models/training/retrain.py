"""Steps of a retrain, each a plain function the Prefect flow orchestrates (flows/retrain.py)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.models.evaluation.metrics import classification_metrics
from rtml.models.evaluation.promotion import Decision, PromotionPolicy
from rtml.models.evaluation.tasks import holdout_metrics, is_regression, judge
from rtml.models.lifecycle.registry import (
    CHAMPION,
    Registered,
    client,
    describe_version,
    load_model,
    log_and_register,
    tag_version,
)
from rtml.models.monitoring.importance import global_importance, log_importance
from rtml.models.monitoring.profile import build_profile
from rtml.models.training.challenger import Window, labels_of
from rtml.models.training.change_point import SINCE_TAG

TRIGGERS = ("schedule", "drift", "manual")  # what may start a retrain; recorded on the new version


def check_trigger(trigger: str) -> str:
    """The trigger, or ValueError naming the allowed ones.

    >>> check_trigger("drift")
    'drift'
    >>> check_trigger("bogus")
    Traceback (most recent call last):
    ...
    ValueError: unknown retrain trigger 'bogus' (choose from schedule, drift, manual)
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown retrain trigger '{trigger}' (choose from {', '.join(TRIGGERS)})")
    return trigger


WATERMARK_TAG = "rtml.train_watermark_ms"
CANDIDATE_TAG = "rtml.candidate"  # continue | fresh | fresh:<family>
CANDIDATE_OF_TAG = "rtml.candidate_of"  # on a candidate not put up: the version that was


def policy_of(settings: Settings) -> PromotionPolicy:
    p = settings.promotion
    return PromotionPolicy(
        margin=p.margin,
        min_holdout=p.min_holdout,
        min_positives=p.min_positives,
        bootstrap_samples=p.bootstrap_samples,
        confidence=p.confidence,
        precision_floor=p.precision_floor,
    )


def champion(settings: Settings) -> tuple[str, Any, int]:
    """(version, loaded model, training watermark in event-time ms) of the champion the scoring job
    serves: an unaudited @champion move is not built on (see :mod:`rtml.models.lifecycle.audit`)."""
    from rtml.models.lifecycle.audit import served_champion

    served = served_champion(settings)
    version = served.version
    if version is None and served.status == "unaudited":
        raise RuntimeError(
            f"@{CHAMPION} v{served.alias} of '{settings.mlflow.model_name}' has no rtml audit record: "
            f"`rtml promote {served.alias} --reason ...` records it"
        )
    if version is None:
        raise RuntimeError(f"no @{CHAMPION} version of '{settings.mlflow.model_name}': run `rtml bootstrap`")
    mv = client(settings).get_model_version(settings.mlflow.model_name, version)
    watermark = int((mv.tags or {}).get(WATERMARK_TAG, "0"))
    return version, load_model(settings.tracking_uri, settings.mlflow.model_name, version), watermark


def predictions(model: Any, frame: Any) -> np.ndarray:
    return (model.learner.score(frame[model.columns]) >= model.learner.threshold).astype(np.int64)


def evaluate(
    policy: PromotionPolicy, spec: StreamSpec, champ: Any, challenger_learner: Any, window: Window
) -> Decision:
    from rtml.models.lifecycle.registry import _pyfunc_class

    challenger = _pyfunc_class()(challenger_learner, champ.columns)
    return judge(policy, spec, labels_of(window.holdout, spec), champ, challenger, window.holdout)


def _decision_png(y: np.ndarray, champion: Any, challenger: Any, out: Path) -> Path:
    """Both models (:class:`~rtml.models.evaluation.decision_figure.Scored`) on the same holdout."""
    import matplotlib.pyplot as plt

    from rtml.models.evaluation.decision_figure import decision_figure

    fig = decision_figure(y, champion, challenger)
    path = out / "decision.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


LINEAGE_TAGS = {
    "labelled_table_version": "rtml.labelled_table_version",
    "labelled_since_ms": "rtml.labelled_since_ms",
}


def lineage_tags(info: dict[str, Any]) -> dict[str, str]:
    """Which labelled-table version (and window start) a version was trained and judged on: that
    window is re-read by time travel, ``read_labelled(settings, since_ms, version)``.

    >>> lineage_tags({"labelled_table_version": 7, "labelled_since_ms": 0, "new_rows": 3})
    {'rtml.labelled_table_version': '7', 'rtml.labelled_since_ms': '0'}
    """
    return {tag: str(info[key]) for key, tag in LINEAGE_TAGS.items() if key in info}


def register_challenger(
    settings: Settings,
    spec: StreamSpec,
    learner: Any,
    window: Window,
    decision: Decision,
    parent: str,
    trigger: str,
    watermark_ms: int,
    champion_model: Any,
    candidate: str = "continue",
    threshold_choice: dict[str, Any] | None = None,
) -> Registered:
    """Log the challenger as a new run + registered version with lineage, metrics and the decision
    figure (``evaluation/decision.png``: both models' PR curves and confusion matrices on the holdout,
    ``champion_model`` being the version ``parent`` the challenger was judged against). ``candidate``
    names how it started (:mod:`rtml.models.training.candidates`); ``threshold_choice`` is how its
    threshold was chosen on the validation split."""
    import mlflow

    y = labels_of(window.holdout, spec)
    scores = learner.score(window.holdout[spec.model_inputs])
    hold = holdout_metrics(spec, y, scores, learner.threshold) if len(y) else {}
    metrics = {f"holdout_{k}": float(v) for k, v in hold.items()}
    metrics |= {f"champion_holdout_{k}": float(v) for k, v in decision.champion.items()}
    metrics |= {f"delta_{k}": float(v) for k, v in decision.deltas.items()}
    metrics |= {f"p_better_{k}": float(v) for k, v in decision.probabilities.items()}
    metrics["threshold"] = float(learner.threshold)
    params = {
        **learner.params(),
        "parent_version": parent,
        "trigger": trigger,
        "threshold": round(float(learner.threshold), 6),
        "candidate": candidate,
        **{f"window_{k}": v for k, v in {**window.info, **(threshold_choice or {})}.items()},
    }
    tags = {
        "rtml.trigger": trigger,
        "rtml.parent_version": parent,
        "rtml.spec": spec.name,
        WATERMARK_TAG: str(watermark_ms),
        "rtml.window": json.dumps(window.info, sort_keys=True),
        CANDIDATE_TAG: candidate,
        **lineage_tags(window.info),
    }
    if "since_change_ms" in window.info:  # a fresh candidate trained after a detected change only
        tags[SINCE_TAG] = str(window.info["since_change_ms"])
    seen = window.labelled
    profile = build_profile(
        seen[spec.model_inputs],
        spec,
        scores=learner.score(seen[spec.model_inputs]),
        labels=labels_of(seen, spec),
    )
    reg = log_and_register(
        settings,
        learner,
        window.train[spec.model_inputs],
        params=params,
        metrics=metrics,
        tags=tags,
        run_name=f"retrain-{trigger}",
        profile=profile,
    )
    tag_version(settings, reg.version, tags)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=reg.run_id):
        if len(y) and not is_regression(spec):  # both models, same holdout, one figure
            from rtml.models.evaluation.decision_figure import Scored

            champ_scores = champion_model.learner.score(window.holdout[champion_model.columns])
            figure = _decision_png(
                y,
                Scored(f"champion v{parent}", champ_scores, float(champion_model.learner.threshold)),
                Scored(f"challenger v{reg.version}", scores, float(learner.threshold)),
                Path(tmp),
            )
            mlflow.log_artifact(str(figure), artifact_path="evaluation")
        mlflow.log_dict(decision.to_dict(), "evaluation/decision.json")
    log_importance(reg.run_id, *global_importance(learner, window.holdout[spec.model_inputs]), reg.version)
    return reg


def record_decision(
    settings: Settings,
    champion_version: str,
    challenger_version: str,
    decision: Decision,
    chosen_version: str | None = None,
    evidence: str = "holdout",
    holdout_verdict: str | None = None,
) -> None:
    """Write the decision (both models' metrics on the same holdout, deltas, probabilities, intervals,
    reason) as tags on both versions. ``chosen_version``: another candidate of the same round was put
    up instead of this one (its own verdict is kept, and says what it would have been).
    ``evidence``: the ``promotion.evidence`` mode the decision was made under; ``holdout_verdict``:
    the holdout's own verdict when that mode held a *promote* back (default: the decision's)."""
    table = json.dumps(decision.table())
    common = {
        "rtml.decision_evidence": evidence,
        "rtml.holdout_verdict": holdout_verdict or decision.outcome,
        "rtml.decision": decision.outcome,
        "rtml.decision_reason": decision.reason[:1000],
        "rtml.decision_table": table,
        "rtml.decision_at_ms": str(int(time.time() * 1000)),
        "rtml.decision_holdout": f"n={decision.holdout_n} positives={decision.holdout_positives}",
        "rtml.decision_confidence": str(decision.confidence),
    }
    text = decision.markdown(champion_version, challenger_version)
    if chosen_version not in (None, challenger_version):
        common[CANDIDATE_OF_TAG] = chosen_version
        text = f"Candidate of the round that put up v{chosen_version} (not this one).\n\n{text}"
    tag_version(settings, challenger_version, {**common, "rtml.compared_with": champion_version})
    tag_version(settings, champion_version, {f"rtml.challenged_by.{challenger_version}": decision.outcome})
    describe_version(settings, challenger_version, text)


LIVE_TAG = "rtml.decision_live"  # the newest live evidence judged on a @shadow version (JSON)


def record_live(settings: Settings, evidence: Any) -> None:
    """The live evidence judged on the ``@shadow`` version at a retrain (tag ``rtml.decision_live``,
    also when it did not promote); when it promotes, the version's decision becomes that one: tags
    ``rtml.decision*`` and a description with the live table above the holdout one."""
    version = evidence.version
    if version is None or version == evidence.champion_version:
        return
    at_ms = int(time.time() * 1000)
    tag_version(settings, version, {LIVE_TAG: json.dumps({**evidence.to_dict(), "at_ms": at_ms})})
    if not evidence.promote:
        return
    live = evidence.live
    tag_version(
        settings,
        version,
        {
            "rtml.decision": "promote",
            "rtml.decision_reason": evidence.reason[:1000],
            "rtml.decision_evidence": evidence.mode,
            "rtml.decision_at_ms": str(at_ms),
            "rtml.decision_live_table": json.dumps(live.table()),
        },
    )
    before = client(settings).get_model_version(settings.mlflow.model_name, version).description or ""
    text = (
        f"Promoted on live evidence (promotion.evidence={evidence.mode}).\n\n"
        + live.markdown(str(evidence.champion_version), version, where="live labelled events")
        + (f"\n\n---\n\n{before}" if before else "")
    )
    describe_version(settings, version, text)


def holdout_f1(model: Any, frame: Any, spec: StreamSpec) -> float:
    """F1 of a model on a labelled frame (used to report improvement over successive retrains)."""
    return classification_metrics(labels_of(frame, spec), predictions(model, frame))["f1"]


def max_event_ms(frame: Any) -> int:
    return int(frame[EVENT_MS].max()) if len(frame) else 0
