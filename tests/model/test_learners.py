"""Model tier: every registered family keeps the learner contract (``check_learner``: pickle, bad inputs,
one-row frames, ...); family-specific checks (MLflow save/load, learning quality); third-party families."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from rtml.infra.config.spec import StreamSpec
from rtml.models.learners.base import Learner, unregister
from rtml.models.learners.check import CHECKS, LearnerCheckError, check_learner, check_spec
from rtml.models.learners.families import FAMILIES, TASKS, make_learner
from rtml.models.learners.streaming_linear import regression_metrics

NUMERIC = ["x1", "x2"]
CATS = {"c": ["a", "b", "c"]}


def learnable(family: str, n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A stream each family can learn: rare far-out positives (classifiers, anomaly), a line (regression)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {"x1": rng.normal(0, 1, n), "x2": rng.normal(0, 1, n), "c": rng.choice(list(CATS["c"]), n)}
    )
    if family == "streaming_linear":
        return X, 2 * X["x1"].to_numpy() - X["x2"].to_numpy() + np.where(X["c"] == "a", 3.0, 0.0)
    if family == "streaming_kmeans":  # anomalies: rare, scattered far out in every direction
        y = (rng.random(n) < 0.01).astype(np.int64)
        angle = rng.uniform(0, 2 * np.pi, int(y.sum()))
        X.loc[y == 1, "x1"] = 6 * np.cos(angle)
        X.loc[y == 1, "x2"] = 6 * np.sin(angle)
        return X, y
    y = (rng.random(n) < 0.05).astype(np.int64)
    X.loc[y == 1, "x1"] += 6.0  # positives sit far out on x1
    return X, y


def make(family: str):  # noqa: ANN201
    return FAMILIES[family](NUMERIC, CATS, seed=0)


def quality(family: str, learner, X: pd.DataFrame, y: np.ndarray) -> float:  # noqa: ANN001
    s = learner.score(X)
    return regression_metrics(y, s)["r2"] if family == "streaming_linear" else roc_auc_score(y, s)


def trained(family: str, batches: int = 10):  # noqa: ANN201
    learner = make(family)
    for i in range(batches):
        learner.learn(*learnable(family, 500, seed=i))
    return learner


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_registered_family_keeps_the_learner_contract(family: str) -> None:
    check_learner(FAMILIES[family])


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("hoeffding_tree", {"adaptive": True, "grace_period": 50}),
        ("hoeffding_tree", {"leaf_prediction": "nba", "grace_period": 50}),
        ("streaming_kmeans", {"half_life": 2, "time_unit": "points", "k": 3}),
        ("sgd_logistic", {"learning_rate": "adaptive", "alpha": 1e-3}),
    ],
)
def test_non_default_hyper_parameters_keep_the_contract(family: str, params: dict) -> None:
    learner = make_learner(check_spec(FAMILIES[family].tasks[0]), family, params, seed=3)
    check_learner(learner)


def test_the_registry_is_the_learner_subclasses() -> None:
    from rtml.infra.config.settings import ModelSettings
    from rtml.models.learners.hoeffding_tree import HoeffdingTree
    from rtml.models.learners.sgd_logistic import SGDLogistic
    from rtml.models.learners.streaming_kmeans import StreamingKMeans
    from rtml.models.learners.streaming_linear import StreamingLinearRegression

    built_in = [SGDLogistic, HoeffdingTree, StreamingKMeans, StreamingLinearRegression]
    assert dict(FAMILIES) == {cls.family: cls for cls in built_in}
    assert dict(TASKS) == {cls.family: cls.tasks for cls in built_in}
    assert all(issubclass(cls, Learner) for cls in built_in)
    assert ModelSettings().family in FAMILIES


# A minimal third-party family, and ways to break its contract (each named by the check it fails).
# Defined inside a fixture, since defining a Learner subclass registers it, and forgotten afterwards;
# module globals while a test runs, so that pickle finds them.


@pytest.fixture
def third_party(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, type[Learner]]]:
    class PriorRate(Learner):
        """Scores every row with the (smoothed) share of positives learnt so far."""

        __qualname__ = "PriorRate"
        family = "test_prior_rate"
        tasks = ("classification", "anomaly")

        def __init__(self, threshold: float = 0.5, seed: int = 0) -> None:
            self.threshold = threshold
            self.positives = 0
            self.n_seen = 0

        @classmethod
        def for_spec(cls, spec: StreamSpec, seed: int = 0, **params: Any) -> PriorRate:
            return cls(threshold=spec.decision_threshold, seed=seed, **params)

        def learn(self, X: pd.DataFrame, y: np.ndarray) -> PriorRate:
            self.positives += int(np.asarray(y).sum())
            self.n_seen += len(X)
            return self

        def score(self, X: pd.DataFrame) -> np.ndarray:
            return np.full(len(X), (self.positives + 1) / (self.n_seen + 2))

        def params(self) -> dict[str, Any]:
            return {"family": self.family, "n_seen": self.n_seen}

    class NaNScores(PriorRate):
        __qualname__ = "NaNScores"
        family = "test_nan_scores"

        def score(self, X: pd.DataFrame) -> np.ndarray:
            return np.full(len(X), np.nan)

    class BatchDependent(PriorRate):
        __qualname__ = "BatchDependent"
        family = "test_batch_dependent"

        def score(self, X: pd.DataFrame) -> np.ndarray:
            return super().score(X) * (1 - np.arange(len(X)) / (2 * len(X)))

    class ArrayParams(PriorRate):
        __qualname__ = "ArrayParams"
        family = "test_array_params"

        def params(self) -> dict[str, Any]:
            return {**super().params(), "weights": np.zeros(2)}

    class ReturnsNone(PriorRate):
        __qualname__ = "ReturnsNone"
        family = "test_returns_none"

        def learn(self, X: pd.DataFrame, y: np.ndarray) -> PriorRate:
            super().learn(X, y)
            return None  # type: ignore[return-value]

    class NoThreshold(PriorRate):
        __qualname__ = "NoThreshold"
        family = "test_no_threshold"

        def __init__(self, threshold: float = 0.5, seed: int = 0) -> None:
            super().__init__(float("nan"), seed)

    class Unseeded(PriorRate):
        __qualname__ = "Unseeded"
        family = "test_unseeded"

        def learn(self, X: pd.DataFrame, y: np.ndarray) -> Unseeded:
            self.n_seen += int(np.random.default_rng().integers(1, 1000))  # ignores the seed
            return super().learn(X, y)

    class ZeroPasses(PriorRate):
        __qualname__ = "ZeroPasses"
        family = "test_zero_passes"
        epochs = 0  # a retrain would not learn at all

    classes = [PriorRate, NaNScores, BatchDependent, ArrayParams, ReturnsNone, NoThreshold, Unseeded]
    classes.append(ZeroPasses)
    yield from registered_for_the_test(monkeypatch, __name__, classes)


def test_a_third_party_family_is_registered_and_passes_the_check(third_party: dict) -> None:
    from rtml.infra.config.spec import load_spec

    prior = third_party["PriorRate"]
    assert FAMILIES["test_prior_rate"] is prior and TASKS["test_prior_rate"] == ("classification", "anomaly")
    check_learner(prior)
    learner = make_learner(load_spec(), "test_prior_rate", seed=1)
    assert isinstance(learner, prior) and learner.threshold == load_spec().decision_threshold
    with pytest.raises(ValueError, match="choose from .*test_prior_rate"):
        make_learner(load_spec(), "forest")
    with pytest.raises(ValueError, match="does not fit spec 'check_regression'"):
        make_learner(check_spec("regression"), "test_prior_rate")


@pytest.mark.parametrize(
    ("broken", "check"),
    [
        ("NaNScores", "scores are finite"),
        ("BatchDependent", "scores each row on its own"),
        ("ArrayParams", "params() is JSON with its family"),
        ("ReturnsNone", "learns a mini-batch"),
        ("NoThreshold", "threshold is a float"),
        ("Unseeded", "same seed, same scores"),
    ],
)
def test_a_third_party_family_breaking_the_contract_fails_naming_the_check(
    third_party: dict, broken: str, check: str
) -> None:
    assert check in CHECKS
    with pytest.raises(
        LearnerCheckError, match=re.escape(f"check_learner({broken}, classification): '{check}'")
    ):
        check_learner(third_party[broken])
    with pytest.raises(AssertionError) as info:
        check_learner(third_party[broken], tasks=["anomaly"])
    assert info.value.check == check  # type: ignore[attr-defined]


def test_a_family_without_retrain_passes_fails_the_class_check(third_party: dict) -> None:
    with pytest.raises(LearnerCheckError, match=re.escape("check_learner(ZeroPasses): 'retrain passes are")):
        check_learner(third_party["ZeroPasses"])
    assert "retrain passes are a positive int" in CHECKS


def test_a_class_is_refused_at_definition_if_it_cannot_be_a_family() -> None:
    with pytest.raises(TypeError, match="does not implement learn, params, score"):

        class Incomplete(Learner):
            family = "test_incomplete"
            tasks = ("classification",)

            @classmethod
            def for_spec(cls, spec: StreamSpec, seed: int = 0, **params: Any) -> Incomplete:
                return cls()

    with pytest.raises(TypeError, match="tasks must be a non-empty tuple"):

        class Forecaster(FAMILIES["sgd_logistic"]):  # type: ignore[misc, valid-type]
            family = "test_forecaster"
            tasks = ("forecasting",)

    with pytest.raises(TypeError, match="family 'sgd_logistic' is already registered by .*SGDLogistic"):

        class Impostor(FAMILIES["hoeffding_tree"]):  # type: ignore[misc, valid-type]
            family = "sgd_logistic"

    assert not {"test_incomplete", "test_forecaster"} & set(FAMILIES)
    assert FAMILIES["sgd_logistic"].__name__ == "SGDLogistic"


def test_an_unregistered_or_foreign_class_fails_the_check() -> None:
    class Plain:
        family = "plain"
        tasks = ("classification",)

    with pytest.raises(LearnerCheckError, match="'is a Learner subclass' failed"):
        check_learner(Plain)  # type: ignore[arg-type]

    class Inherits(FAMILIES["sgd_logistic"]):  # type: ignore[misc, valid-type]
        """Declares no family of its own: not registered."""

    with pytest.raises(LearnerCheckError, match="'declares its family' failed"):
        check_learner(Inherits)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mlflow_save_and_load_give_identical_predictions(family: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.models import infer_signature

    from rtml.models.lifecycle.registry import _pyfunc_class

    learner = trained(family)
    X, _ = learnable(family, 300, seed=98)
    model = _pyfunc_class()(learner, [*NUMERIC, *CATS])
    signature = infer_signature(X.head(5), model.predict(None, X.head(5)))
    mlflow.pyfunc.save_model(tmp_path / "m", python_model=model, signature=signature, input_example=X.head(5))
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    out = loaded.predict(X)
    np.testing.assert_array_equal(out["score"].to_numpy(), learner.score(X))
    assert loaded.metadata.get_input_schema().input_names() == [*NUMERIC, *CATS]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_learning_on_a_learnable_stream_improves_the_metric(family: str) -> None:
    X_test, y_test = learnable(family, 4000, seed=1234)
    early = trained(family, batches=1)
    late = trained(family, batches=20)
    q_early, q_late = quality(family, early, X_test, y_test), quality(family, late, X_test, y_test)
    assert q_late >= q_early - 0.01 and q_late > 0.9, (q_early, q_late)
    assert late.n_seen == 20 * 500


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_next_hour_scores_like_the_hour_learnt_from(family: str) -> None:
    """A short history can hold one hour of the day but for a single row: the next hour's events
    must not land dozens of standard deviations away (the pricing example's R^2 was -5.3 when its
    training rows ended 0.5 s past an hour)."""
    learner = FAMILIES[family]([*NUMERIC, "event_hour"], CATS, seed=0)
    for i in range(10):
        X, y = learnable(family, 500, seed=i)
        X["event_hour"] = 12.0
        if i == 0:  # early, while the model's errors are large
            X.loc[X.index[0], "event_hour"] = 13.0
        learner.learn(X, y)
    X_test, y_test = learnable(family, 4000, seed=1234)
    same, next_hour = X_test.assign(event_hour=12.0), X_test.assign(event_hour=13.0)
    q_same, q_next = quality(family, learner, same, y_test), quality(family, learner, next_hour, y_test)
    assert q_same > 0.9 and q_next > q_same - 0.02, (q_same, q_next)


def test_unknown_family_and_wrong_task_are_one_line_errors() -> None:
    from rtml.infra.config.spec import load_spec

    with pytest.raises(
        ValueError, match=r"unknown model family 'forest' \(choose from hoeffding_tree, sgd_logistic"
    ):
        make_learner(load_spec(), "forest")
    with pytest.raises(ValueError, match="does not fit spec 'card_transactions'"):
        make_learner(load_spec(), "streaming_linear")
    with pytest.raises(ValueError, match="model.params for 'hoeffding_tree'"):
        make_learner(load_spec(), "hoeffding_tree", {"depth": 3})


def registered_for_the_test(monkeypatch: Any, module: str, classes: list[type[Learner]]) -> Iterator[dict]:
    """Families defined inside a fixture, made module globals (so they pickle) and unregistered after."""
    for cls in classes:
        monkeypatch.setattr(sys.modules[module], cls.__qualname__, cls, raising=False)
    yield {cls.__qualname__: cls for cls in classes}
    for cls in classes:
        unregister(cls.family)
