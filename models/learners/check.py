"""``check_learner``: the :class:`~rtml.models.learners.base.Learner` contract, checked on a family.

Call it on a family's class (or on a learner made for :func:`check_spec`) to know it will work in
the platform: it builds, learns and scores synthetic mini-batches (:func:`check_batch`) of every
task the family declares, and raises :class:`LearnerCheckError` (an AssertionError) naming the first
check that failed. The built-in families run it in ``tests/model/test_learners.py``; a third-party
family can run it in its own tests.

>>> from rtml.models.learners.streaming_linear import StreamingLinearRegression
>>> check_learner(StreamingLinearRegression)  # passes quietly

A family whose scores are not finite fails, and the error names the check:

>>> import numpy as np
>>> from rtml.models.learners.base import unregister
>>> class NaNScores(StreamingLinearRegression):
...     family = "nan_scores_example"
...     def score(self, X):
...         return np.full(len(X), np.nan)
>>> try:
...     check_learner(NaNScores)
... except LearnerCheckError as exc:
...     print(exc)
check_learner(NaNScores, regression): 'scores are finite' failed: 200 of 200 scores are not finite
>>> _ = unregister("nan_scores_example")  # defining the class registered it
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from rtml.infra.config.spec import FeatureSpec, LabelSpec, StreamSpec
from rtml.models.learners.base import SPEC_TASKS, Learner, registered
from rtml.models.learners.check_explain import EXPLAIN_CHECKS, check_explanations

#: The model inputs of :func:`check_spec`: numeric inputs and categorical inputs with their categories.
CHECK_NUMERIC = ["x1", "x2"]
CHECK_CATEGORIES = {"c": ["a", "b", "c"]}

#: Every check :func:`check_learner` runs, in order (the names its errors carry).
CHECKS = (
    "is a Learner subclass",
    "declares its family",
    "declares its tasks",
    "retrain passes are a positive int",
    "builds for a spec",
    "rejects unknown params",
    "threshold is a float",
    "learns a mini-batch",
    "scores a mini-batch",
    "scores are finite",
    "scores lie in [0, 1]",
    "params() is JSON with its family",
    "scores each row on its own",
    "scoring leaves the learner unchanged",
    "handles missing, non-finite and unseen inputs",
    "learns from missing, non-finite and unseen inputs",
    "learns a one-row batch",
    "pickle and deepcopy keep the scores",
    "same seed, same scores",
    "implements contributions()",
    *EXPLAIN_CHECKS,
)


class LearnerCheckError(AssertionError):
    """A learner broke its contract: ``check`` names the check (one of :data:`CHECKS`)."""

    def __init__(self, learner: str, task: str | None, check: str, detail: str) -> None:
        where = f"{learner}, {task}" if task else learner
        super().__init__(f"check_learner({where}): '{check}' failed: {detail}")
        self.learner = learner
        self.task = task
        self.check = check
        self.detail = detail


def check_spec(task: str = "classification") -> StreamSpec:
    """A small stream spec of the task: numeric inputs ``x1``, ``x2``, categorical ``c`` (a, b, c).

    >>> s = check_spec("regression"); s.task, s.model_inputs
    ('regression', ['x1', 'x2', 'c'])
    """
    if task not in SPEC_TASKS:
        raise ValueError(f"unknown task '{task}' (choose from {', '.join(SPEC_TASKS)})")
    features = [FeatureSpec(name=n, type="double") for n in CHECK_NUMERIC]
    features += [FeatureSpec(name=n, type="string", categories=c) for n, c in CHECK_CATEGORIES.items()]
    label = LabelSpec(field="label", type="double" if task == "regression" else "long")
    return StreamSpec(
        name=f"check_{task}",
        task=task,  # type: ignore[arg-type]
        event_id="event_id",
        event_time="event_time",
        entity_key="entity_id",
        features=features,
        label=label,
    )


def check_batch(task: str, n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A learnable mini-batch of :func:`check_spec`'s inputs and its targets.

    Classification: about 10% positives, shifted out on ``x1``; anomaly: about 2% anomalies far out
    in every direction (labelled 1); regression: a linear target of ``x1``, ``x2`` and ``c``.

    >>> X, y = check_batch("classification", 5); list(X.columns), y.dtype.kind
    (['x1', 'x2', 'c'], 'i')
    """
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({name: rng.normal(0, 1, n) for name in CHECK_NUMERIC})
    for name, cats in CHECK_CATEGORIES.items():
        X[name] = rng.choice(cats, n)
    if task == "regression":
        return X, 2 * X["x1"].to_numpy() - X["x2"].to_numpy() + np.where(X["c"] == "a", 3.0, 0.0)
    if task == "anomaly":
        y = (rng.random(n) < 0.02).astype(np.int64)
        angle = rng.uniform(0, 2 * np.pi, int(y.sum()))
        X.loc[y == 1, "x1"] = 6 * np.cos(angle)
        X.loc[y == 1, "x2"] = 6 * np.sin(angle)
        return X, y
    y = (rng.random(n) < 0.1).astype(np.int64)
    X.loc[y == 1, "x1"] += 4.0
    return X, y


def _odd(X: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """A copy of the frame with missing, infinite and unseen values, and the rows left clean."""
    odd = X.copy()
    rows = np.arange(len(X))
    cat = next(iter(CHECK_CATEGORIES))
    odd[cat] = odd[cat].astype("object")
    odd.loc[rows % 6 == 0, cat] = "never-seen"
    odd.loc[rows % 6 == 1, cat] = None
    odd.loc[rows % 6 == 2, "x1"] = np.nan
    odd.loc[rows % 6 == 3, "x2"] = np.inf
    odd.loc[rows % 6 == 4, "x1"] = -np.inf
    return odd, rows[rows % 6 == 5]


def _require(ok: bool, detail: str) -> None:
    if not ok:
        raise AssertionError(detail)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


class _Checker:
    """Runs the checks of one learner on one task; a failure becomes a :class:`LearnerCheckError`."""

    def __init__(self, name: str, task: str | None) -> None:
        self.name = name
        self.task = task

    @contextmanager
    def check(self, check: str) -> Iterator[None]:
        assert check in CHECKS, check
        try:
            yield
        except LearnerCheckError:
            raise
        except AssertionError as exc:
            raise LearnerCheckError(self.name, self.task, check, str(exc)) from exc
        except Exception as exc:
            raise LearnerCheckError(self.name, self.task, check, f"{type(exc).__name__}: {exc}") from exc

    def scores(self, learner: Learner, X: pd.DataFrame, check: str = "scores a mini-batch") -> np.ndarray:
        """The learner's scores of X, checked: a float array of X's length, finite (and in [0, 1]).

        On the main mini-batch a failure names its own check; on another frame (odd values, one row)
        it is reported under ``check``, the check that frame belongs to.
        """
        main = check == "scores a mini-batch"
        finite, bounded = ("scores are finite", "scores lie in [0, 1]") if main else (check, check)
        with self.check(check):
            s = learner.score(X)
            _require(isinstance(s, np.ndarray), f"score() returned {type(s).__name__}, not a numpy array")
            _require(s.shape == (len(X),), f"score() of {len(X)} rows returned shape {s.shape}")
            _require(np.issubdtype(s.dtype, np.floating), f"score() returned dtype {s.dtype}, not float")
        with self.check(finite):
            bad = int((~np.isfinite(s)).sum())
            _require(bad == 0, f"{bad} of {len(s)} scores are not finite")
        if self.task != "regression":
            with self.check(bounded):
                out = int(((s < 0) | (s > 1)).sum())
                _require(
                    out == 0, f"{out} of {len(s)} scores are outside [0, 1] (min {s.min()}, max {s.max()})"
                )
        return s

    def threshold(self, learner: Learner, when: str) -> None:
        with self.check("threshold is a float"):
            t = getattr(learner, "threshold", None)
            _require(isinstance(t, float), f"threshold {when} is {t!r} ({type(t).__name__}), not a float")
            if self.task != "regression":
                _require(
                    bool(np.isfinite(t)), f"threshold {when} is {t}: {self.task} decisions need it finite"
                )


def check_learner(
    learner: Learner | type[Learner],
    *,
    tasks: Iterable[str] | None = None,
    n: int = 200,
    seed: int = 0,
    explain: bool | None = None,
) -> None:
    """Check that a family keeps the :class:`~rtml.models.learners.base.Learner` contract.

    ``learner`` is a family's class (built with ``for_spec(check_spec(task), seed=seed)``) or an
    untrained learner made for :func:`check_spec`'s inputs (checked on deep copies, so it is left
    untouched; useful to check non-default hyper-parameters). ``tasks``: the tasks to check it on
    (default: every task the family declares), each with mini-batches of ``n`` rows from
    :func:`check_batch`. Checks (:data:`CHECKS`): a registered family with declared tasks; builds for a
    spec and rejects unknown params; a float threshold (finite for classification and anomaly); learns
    three mini-batches and returns itself; scores them as a finite float array of their length (in
    [0, 1] for classification and anomaly); params() JSON-serialisable with its family; a row scores the
    same alone (a one-row frame) as in its batch; scoring changes nothing; missing, non-finite numeric
    values and unseen or missing categories score finite, leave the other rows' scores alone, and can
    be learnt from; learns a one-row batch; pickle and deepcopy keep scores and params; the same seed on
    the same data gives the same scores. A family that implements
    :meth:`~rtml.models.learners.base.Learner.contributions` (or any family with ``explain=True``;
    ``explain=False`` skips them) is checked on its explanations too
    (:data:`~rtml.models.learners.check_explain.EXPLAIN_CHECKS`): the model inputs by name, finite,
    adding up to the raw output within 1e-6 (relative to max(1, |raw|)), a raw output the score
    follows from, rows explained on their own, odd inputs explained, ``score_explained`` consistent.

    Returns None; raises :class:`LearnerCheckError` naming the first failed check.
    """
    cls = learner if isinstance(learner, type) else type(learner)
    name = cls.__qualname__
    checker = _Checker(name, None)
    with checker.check("is a Learner subclass"):
        _require(issubclass(cls, Learner), f"{cls.__module__}.{name} does not subclass Learner")
    with checker.check("declares its family"):
        family = cls.__dict__.get("family")
        _require(isinstance(family, str) and bool(family), f"no family declared on the class: {family!r}")
        _require(
            registered().get(family) is cls,
            f"family '{family}' is registered as {registered().get(family)!r}, not this class",
        )
    with checker.check("declares its tasks"):
        declared = getattr(cls, "tasks", None)
        _require(
            isinstance(declared, tuple) and bool(declared) and set(declared) <= set(SPEC_TASKS),
            f"tasks {declared!r} is not a non-empty tuple drawn from {SPEC_TASKS}",
        )
        chosen = tuple(tasks) if tasks is not None else declared
        undeclared = [t for t in chosen if t not in declared]
        _require(not undeclared, f"asked to check task(s) {undeclared} the family does not declare")
    with checker.check("retrain passes are a positive int"):
        passes = getattr(cls, "epochs", None)
        _require(
            isinstance(passes, int) and not isinstance(passes, bool) and passes >= 1,
            f"epochs {passes!r} is not a positive int",
        )

    for task in chosen:
        _check_task(_Checker(name, task), learner, cls, check_spec(task), n, seed, explain)


def _check_task(
    checker: _Checker,
    learner: Learner | type[Learner],
    cls: type[Learner],
    spec: StreamSpec,
    n: int,
    seed: int,
    explain: bool | None = None,
) -> None:
    """The checks on one task, with learners built for the spec (a class) or copied (an instance)."""
    builds = isinstance(learner, type)

    def fresh() -> Learner:
        return learner.for_spec(spec, seed=seed) if isinstance(learner, type) else copy.deepcopy(learner)

    task = spec.task
    batches = [check_batch(task, n, seed=seed + i) for i in range(3)]
    X, y = check_batch(task, n, seed=seed + 100)

    with checker.check("builds for a spec"):
        model = fresh()
        _require(isinstance(model, cls), f"got {type(model).__name__}, not {cls.__name__}")
    if builds:
        with checker.check("rejects unknown params"):
            try:
                cls.for_spec(spec, seed=seed, not_a_parameter_of_any_learner=1)
            except TypeError:
                pass
            else:
                raise AssertionError(
                    "for_spec(..., not_a_parameter_of_any_learner=1) did not raise TypeError"
                )
    checker.threshold(model, "before learning")

    with checker.check("learns a mini-batch"):
        for Xb, yb in batches:
            back = model.learn(Xb, yb)
            _require(back is model, f"learn() returned {type(back).__name__}, not the learner itself")
    s = checker.scores(model, X)
    checker.threshold(model, "after learning")

    with checker.check("params() is JSON with its family"):
        params = model.params()
        _require(isinstance(params, dict), f"params() returned {type(params).__name__}, not a dict")
        json.dumps(params)
        _require(
            params.get("family") == cls.family,
            f"params()['family'] is {params.get('family')!r}, not {cls.family!r}",
        )

    with checker.check("scores each row on its own"):
        rows = [0, 1, len(X) // 2, len(X) - 1]
        alone = np.concatenate(
            [checker.scores(model, X.iloc[[i]], "scores each row on its own") for i in rows]
        )
        _require(
            np.allclose(alone, s[rows], rtol=1e-9, atol=1e-12),
            f"rows scored in one-row frames {alone.tolist()} differ from the batch's {s[rows].tolist()}",
        )

    with checker.check("scoring leaves the learner unchanged"):
        _require(_same(model.score(X), s), "scoring the same batch twice gave different scores")
        _require(model.params() == params, "params() changed by scoring")

    odd, clean = _odd(X)
    s_odd = checker.scores(model, odd, "handles missing, non-finite and unseen inputs")
    with checker.check("handles missing, non-finite and unseen inputs"):
        _require(
            np.allclose(s_odd[clean], s[clean], rtol=1e-9, atol=1e-12),
            "rows without odd values scored differently beside rows with them",
        )

    if explain or (explain is None and cls.explains()):
        with checker.check("implements contributions()"):
            _require(cls.explains(), f"{cls.__name__} does not override Learner.contributions()")
        check_explanations(checker.check, model, X, s, odd, spec.model_inputs)

    with checker.check("learns from missing, non-finite and unseen inputs"):
        odd_learner = copy.deepcopy(model).learn(odd, y)
    checker.scores(odd_learner, X, "learns from missing, non-finite and unseen inputs")

    with checker.check("learns a one-row batch"):
        one = fresh().learn(X.iloc[[0]], y[:1])
        one.learn(X.iloc[[1]], y[1:2])
    checker.scores(one, X, "learns a one-row batch")
    checker.scores(copy.deepcopy(model).learn(X.iloc[[0]], y[:1]), X, "learns a one-row batch")

    with checker.check("pickle and deepcopy keep the scores"):
        for how, again in (
            ("pickle", pickle.loads(pickle.dumps(model))),
            ("deepcopy", copy.deepcopy(model)),
        ):
            _require(type(again) is type(model), f"{how} gave a {type(again).__name__}")
            _require(_same(again.score(X), s), f"{how} round trip changed the scores")
            _require(again.params() == params, f"{how} round trip changed params()")
            t0, t1 = model.threshold, again.threshold
            _require(t0 == t1 or (np.isnan(t0) and np.isnan(t1)), f"{how} round trip changed the threshold")

    with checker.check("same seed, same scores"):
        twin = fresh()
        for Xb, yb in batches:
            twin.learn(Xb, yb)
        _require(
            _same(twin.score(X), s), "two learners with the same seed, on the same data, score differently"
        )
