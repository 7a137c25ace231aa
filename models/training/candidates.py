"""Several challengers per retrain, one decision: which candidates to train and which one to put up.

Every candidate is trained on the same window, gets its threshold on the same validation split and
is judged against the champion on the same holdout (:mod:`rtml.models.evaluation.decision`). Of
those whose verdict is *promote*, the best on the task's headline metric is promoted; the others are
still registered (lineage) and tagged as candidates of that decision. Kinds (``retrain.candidates``):

- ``continue``: the champion's learner trained further on the window (incremental learning);
- ``fresh``: a new learner of ``model.family`` trained on the window only (forgets the old concept:
  the candidate that adapts after a drift);
- ``fresh:<family>``: a new learner of another registered family, default parameters.

>>> [c.name for c in parse_candidates(["continue", "fresh", "fresh:hoeffding_tree"])]
['continue', 'fresh', 'fresh:hoeffding_tree']
>>> parse_candidates(["warm"])
Traceback (most recent call last):
...
ValueError: retrain.candidates: unknown candidate 'warm' (use continue, fresh or fresh:<family>)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rtml.infra.config.spec import StreamSpec
from rtml.models.evaluation.tasks import is_regression


@dataclass(frozen=True)
class Candidate:
    """How one challenger starts: from the champion (``continue``) or from scratch (``fresh``)."""

    name: str
    start: str  # "continue" | "fresh"
    family: str | None = None  # fresh: None = the settings' model.family


def parse_candidates(entries: list[str]) -> list[Candidate]:
    """The candidates named in settings, in order, without repeats; ValueError naming a bad one."""
    out: list[Candidate] = []
    for entry in entries:
        kind, _, family = entry.partition(":")
        if kind == "continue" and not family:
            cand = Candidate(entry, "continue")
        elif kind == "fresh":
            cand = Candidate(entry, "fresh", family or None)
        else:
            raise ValueError(
                f"retrain.candidates: unknown candidate '{entry}' (use continue, fresh or fresh:<family>)"
            )
        if cand not in out:
            out.append(cand)
    if not out:
        raise ValueError("retrain.candidates: name at least one candidate")
    return out


def headline(spec: StreamSpec, decision: Any) -> float:
    """The candidate's score used to rank candidates: F1 (classification, anomaly), -RMSE (regression).

    An undefined value ranks last."""
    value = decision.challenger.get("rmse" if is_regression(spec) else "f1")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return -float(value) if is_regression(spec) else float(value)


def choose(spec: StreamSpec, decisions: list[Any]) -> int:
    """Index of the candidate the retrain puts up: the best promotable one; if none may be promoted,
    the best of all (its decision says why it was not promoted). Ties go to the earlier candidate.

    >>> from types import SimpleNamespace as D
    >>> from rtml.infra.config.spec import load_spec
    >>> spec = load_spec()
    >>> ds = [D(promote=False, challenger={"f1": 0.9}), D(promote=True, challenger={"f1": 0.8}),
    ...       D(promote=True, challenger={"f1": 0.85})]
    >>> choose(spec, ds)
    2
    >>> choose(spec, [D(promote=False, challenger={"f1": 0.7}), D(promote=False, challenger={"f1": 0.75})])
    1
    """
    pool = [i for i, d in enumerate(decisions) if d.promote] or list(range(len(decisions)))
    return max(pool, key=lambda i: (headline(spec, decisions[i]), -i))
