"""Model tier: every family explains its scores; contributions add up to the raw output; the linear
families agree with SHAP's linear explainer; the tree and k-means agree with a per-event walk."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rtml.infra.config.spec import StreamSpec
from rtml.models.learners.base import Learner
from rtml.models.learners.check import LearnerCheckError, check_learner
from rtml.models.learners.explain import Contributions, group, grouping
from rtml.models.learners.families import FAMILIES
from tests.model.test_learners import CATS, NUMERIC, learnable, registered_for_the_test, trained

INPUTS = [*NUMERIC, *CATS]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_explains_and_keeps_the_explanation_contract(family: str) -> None:
    assert FAMILIES[family].explains()
    check_learner(FAMILIES[family], explain=True)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_contributions_add_up_to_the_raw_output_of_a_trained_model(family: str) -> None:
    learner = trained(family, batches=10)
    X, _ = learnable(family, 3000, seed=77)
    c = learner.contributions(X)
    assert list(c.features) == INPUTS  # the one-hot columns of c are reported under its own name
    gap = np.abs(c.base + c.values.sum(axis=1) - c.raw)
    assert gap.max() <= 1e-6 * max(1.0, float(np.abs(c.raw).max())), gap.max()
    assert np.abs(c.values).sum(axis=0).min() >= 0 and np.abs(c.values[:, 0]).max() > 0  # x1 matters
    scores, top = learner.score_explained(X, 3)
    np.testing.assert_array_equal(scores, learner.score(X))
    assert top.features.shape == (3000, 3) and set(np.unique(top.features)) <= set(INPUTS)
    assert (np.abs(top.values[:, 0]) >= np.abs(top.values[:, 1])).all()
    np.testing.assert_allclose(top.base + top.values.sum(1) + top.rest, c.raw, atol=1e-9)


def _shap_grouped(learner: Any, background: pd.DataFrame, X: pd.DataFrame) -> np.ndarray:
    """SHAP's linear explainer with an independent masker on the encoded background, grouped per input."""
    import shap

    enc = learner.encoder
    B, Z = enc.transform(background), enc.transform(X)
    w = np.ravel(learner.model.coef_)
    b = float(np.ravel(learner.model.intercept_)[0])
    masker = shap.maskers.Independent(B, max_samples=len(B))
    phi = shap.LinearExplainer((w, b), masker).shap_values(Z)
    return group(phi, grouping(enc.numeric, enc.categories)[1])


@pytest.mark.parametrize("family", ["sgd_logistic", "streaming_linear"])
def test_linear_contributions_equal_shap_linear_explainer(family: str) -> None:
    pytest.importorskip("shap")
    learner = FAMILIES[family](NUMERIC, CATS, seed=0)
    batches = [learnable(family, 500, seed=i) for i in range(8)]
    for Xb, yb in batches:
        learner.learn(Xb, yb)
    background = pd.concat([Xb for Xb, _ in batches], ignore_index=True)  # exactly what it learnt from
    X, _ = learnable(family, 1000, seed=99)
    X.loc[::7, "c"] = "never-seen"  # unseen categories go to the unknown slot, in both
    ours = learner.contributions(X)
    theirs = _shap_grouped(learner, background, X)
    np.testing.assert_allclose(ours.values, theirs, atol=1e-6, rtol=0)
    assert np.abs(theirs).max() > 0.1  # a real comparison, not of zeros


def test_tree_contributions_follow_rivers_own_decision_path() -> None:
    """The vectorised path contributions equal a per-event walk down River's tree (``Branch.walk``)."""
    from river.tree.nodes.branch import DTBranch

    learner = trained("hoeffding_tree", batches=10)
    root = learner.model._root
    assert isinstance(root, DTBranch) and learner.model.height >= 2  # a tree with splits to follow
    X, _ = learnable("hoeffding_tree", 400, seed=5)
    c = learner.contributions(X)
    cols = learner._columns(X)

    def value(node: Any) -> float:
        stats = node.stats
        return stats.get(1, 0.0) / (sum(stats.values()) or 1.0)

    expected = np.zeros((len(X), len(INPUTS)))
    for i in range(len(X)):
        x = {n: cols[n][i] for n in INPUTS}
        path = list(root.walk(x, until_leaf=True))
        for parent, child in zip(path, path[1:], strict=False):
            expected[i, INPUTS.index(parent.feature)] += value(child) - value(parent)
    np.testing.assert_allclose(c.values, expected, atol=1e-12)
    np.testing.assert_allclose(c.base, value(root))
    assert np.abs(c.values[:, 0]).max() > 0.1  # positives sit out on x1: the tree's first split


def test_kmeans_contributions_are_shares_of_the_distance_to_the_nearest_centre() -> None:
    learner = trained("streaming_kmeans", batches=5)
    X, y = learnable("streaming_kmeans", 2000, seed=8)
    c = learner.contributions(X)
    Z = learner.encoder.transform(X)
    brute = np.stack([((Z[:, None, :] - learner.centres_[None]) ** 2).sum(-1)], 0)[0]
    nearest = brute.argmin(1)
    sq = (Z - learner.centres_[nearest]) ** 2
    per_input = np.c_[sq[:, 0], sq[:, 1], sq[:, 2:].sum(1)]
    share = per_input / per_input.sum(1, keepdims=True)
    np.testing.assert_allclose(c.values / c.raw[:, None], share, atol=1e-9)
    np.testing.assert_allclose(c.values.sum(1), learner.distance(X), atol=1e-9)
    anomalies = np.flatnonzero(y == 1)
    top = c.top(1).features[anomalies, 0]
    assert set(top) <= {"x1", "x2"}  # anomalies are far out on x1/x2, not in c


@pytest.fixture
def explainers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, type[Learner]]]:
    """Third-party families: one without explanations, one whose contributions do not add up."""

    class Silent(Learner):
        __qualname__ = "Silent"
        family = "test_silent"
        tasks = ("classification",)

        def __init__(self, threshold: float = 0.5, seed: int = 0) -> None:
            self.threshold = threshold
            self.n_seen = 0

        @classmethod
        def for_spec(cls, spec: StreamSpec, seed: int = 0, **params: Any) -> Silent:
            return cls(threshold=spec.decision_threshold, seed=seed, **params)

        def learn(self, X: pd.DataFrame, y: np.ndarray) -> Silent:
            self.n_seen += len(X)
            return self

        def score(self, X: pd.DataFrame) -> np.ndarray:
            return 1 / (1 + np.exp(-X["x1"].fillna(0).clip(-50, 50).to_numpy()))

        def params(self) -> dict[str, Any]:
            return {"family": self.family}

    class OffByOne(Silent):
        __qualname__ = "OffByOne"
        family = "test_off_by_one"

        def contributions(self, X: pd.DataFrame) -> Contributions:
            x1 = X["x1"].fillna(0).clip(-50, 50).to_numpy()
            values = np.c_[x1, np.zeros((len(X), 2))]
            return Contributions(("x1", "x2", "c"), values, np.ones(len(X)), x1, "log_odds")

    yield from registered_for_the_test(monkeypatch, __name__, [Silent, OffByOne])


def test_a_family_without_explanations_passes_unless_asked_to_explain(explainers: dict) -> None:
    silent = explainers["Silent"]
    assert not silent.explains()
    check_learner(silent)
    with pytest.raises(LearnerCheckError, match=re.escape("'implements contributions()' failed")):
        check_learner(silent, explain=True)
    with pytest.raises(NotImplementedError, match="'test_silent' does not explain its scores"):
        silent().contributions(pd.DataFrame({"x1": [1.0]}))


def test_contributions_that_do_not_add_up_fail_naming_the_check(explainers: dict) -> None:
    with pytest.raises(LearnerCheckError, match=re.escape("'contributions add up to the raw output' failed")):
        check_learner(explainers["OffByOne"])


def test_top_k_is_a_stable_descending_sort_by_magnitude() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(-3, 4, (2000, 6)).astype(float)  # many ties
    c = Contributions(tuple("abcdef"), values, np.zeros(2000), values.sum(1), "prediction")
    order = np.argsort(-np.abs(values), axis=1, kind="stable")
    for k in (1, 2, 3, 4, 5, 6, 9):
        top = c.top(k)
        want = order[:, : min(k, 6)]
        assert (top.features == np.array(list("abcdef"), dtype=object)[want]).all()
        np.testing.assert_array_equal(top.values, np.take_along_axis(values, want, 1))
        np.testing.assert_allclose(top.values.sum(1) + top.rest, values.sum(1))


def test_global_importance_ranks_the_inputs_that_drive_the_scores() -> None:
    from rtml.models.monitoring.drift_report import markdown
    from rtml.models.monitoring.importance import global_importance, importance_from_metrics

    learner = trained("sgd_logistic", batches=5)
    X, _ = learnable("sgd_logistic", 1000, seed=4)
    importance, output = global_importance(learner, X)
    assert output == "log_odds" and list(importance)[0] == "x1"  # positives sit out on x1
    assert set(importance) == set(INPUTS) and list(importance.values()) == sorted(importance.values())[::-1]
    metrics = {f"importance.{k}": v for k, v in importance.items()} | {"holdout_f1": 0.5}
    assert importance_from_metrics(metrics) == importance
    summary = {"model": "m", "champion": "3", "window": "15m", "events": 9, "labelled": 0}
    text = markdown({**summary, "findings": [], "alerts_sent": []}, importance)
    assert f"(mean |contribution| on its holdout): x1 {importance['x1']:.3g}" in text
    assert global_importance(learner, X.iloc[:0]) == ({}, None)
