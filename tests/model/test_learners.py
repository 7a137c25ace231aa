"""Model tier: the contract every learner family keeps (pickle, MLflow, bad inputs, learning)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from rtml.models.learners.families import FAMILIES
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
def test_pickle_round_trip_scores_identically(family: str) -> None:
    learner = trained(family)
    X, _ = learnable(family, 300, seed=99)
    again = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(again.score(X), learner.score(X))
    assert again.params() == learner.params()


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
def test_unseen_categories_and_missing_values_score_finite(family: str) -> None:
    learner = trained(family)
    X, _ = learnable(family, 200, seed=97)
    known = learner.score(X)
    odd = X.copy()
    odd.loc[::3, "c"] = "never-seen"
    odd.loc[1::3, "x1"] = np.nan
    odd.loc[2::5, "x2"] = np.inf
    s = learner.score(odd)
    assert s.shape == (200,) and np.isfinite(s).all()
    untouched = np.arange(200)[
        (np.arange(200) % 3 != 0) & (np.arange(200) % 3 != 1) & (np.arange(200) % 5 != 2)
    ]
    np.testing.assert_allclose(s[untouched], known[untouched])
    if family != "streaming_linear":
        assert ((s >= 0) & (s <= 1)).all()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_learning_on_a_learnable_stream_improves_the_metric(family: str) -> None:
    X_test, y_test = learnable(family, 4000, seed=1234)
    early = trained(family, batches=1)
    late = trained(family, batches=20)
    q_early, q_late = quality(family, early, X_test, y_test), quality(family, late, X_test, y_test)
    assert q_late >= q_early - 0.01 and q_late > 0.9, (q_early, q_late)
    assert late.n_seen == 20 * 500


def test_unknown_family_and_wrong_task_are_one_line_errors() -> None:
    from rtml.infra.config.spec import load_spec
    from rtml.models.learners.families import make_learner

    with pytest.raises(ValueError, match="unknown model family 'forest'"):
        make_learner(load_spec(), "forest")
    with pytest.raises(ValueError, match="does not fit spec 'card_transactions'"):
        make_learner(load_spec(), "streaming_linear")
    with pytest.raises(ValueError, match="model.params for 'hoeffding_tree'"):
        make_learner(load_spec(), "hoeffding_tree", {"depth": 3})
