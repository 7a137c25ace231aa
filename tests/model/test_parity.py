"""Model tier: our learners against the libraries they stand on, on the same synthetic streams.

- Hoeffding tree: prequential accuracy (score a mini-batch, then learn it) of our batch path vs
  River's own tree run the River way (predict one, learn one), same hyper-parameters.
- Streaming k-means: centres after a stationary stream vs scikit-learn's KMeans on all of it.
- Streaming linear regression: R^2 vs scikit-learn's SGDRegressor fed the same mini-batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rtml.models.learners.hoeffding_tree import HoeffdingTree
from rtml.models.learners.streaming_kmeans import StreamingKMeans
from rtml.models.learners.streaming_linear import StreamingLinearRegression, regression_metrics


def river_stream(name: str, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    from river import datasets

    source = {"SEA": datasets.synth.SEA(variant=0, seed=42), "Agrawal": datasets.synth.Agrawal(seed=42)}[name]
    rows = list(source.take(n))
    X = pd.DataFrame([{str(k): float(v) for k, v in x.items()} for x, _ in rows])
    return X, np.array([int(y) for _, y in rows])


def prequential_ours(X: pd.DataFrame, y: np.ndarray, batch: int) -> float:
    model = HoeffdingTree(list(X.columns), {}, positive_weight=1.0)
    hits = 0
    for start in range(0, len(X), batch):
        Xb, yb = X.iloc[start : start + batch], y[start : start + batch]
        hits += int(((model.score(Xb) >= 0.5).astype(int) == yb).sum())
        model.learn(Xb, yb)
    return hits / len(X)


def prequential_river(X: pd.DataFrame, y: np.ndarray) -> float:
    from river import tree

    model = tree.HoeffdingTreeClassifier(grace_period=200, delta=1e-7, leaf_prediction="mc")
    hits = 0
    for x, yi in zip(X.to_dict("records"), y.tolist(), strict=True):
        proba = model.predict_proba_one(x)
        hits += int((proba.get(1, 0.0) >= 0.5) == yi)
        model.learn_one(x, yi)
    return hits / len(X)


@pytest.mark.parametrize("stream", ["SEA", "Agrawal"])
def test_hoeffding_tree_prequential_accuracy_within_one_point_of_river(stream: str) -> None:
    X, y = river_stream(stream, 20_000)
    ours, river = prequential_ours(X, y, batch=100), prequential_river(X, y)
    assert abs(ours - river) <= 0.01, (ours, river)
    assert ours > 0.8


def test_batch_scoring_matches_river_per_event_predictions_exactly() -> None:
    X, y = river_stream("Agrawal", 8000)
    model = HoeffdingTree(list(X.columns), {}, positive_weight=1.0).learn(X, y)
    assert model.model.n_nodes > 3  # a real tree, with branches
    per_event = [model.model.predict_proba_one(x).get(1, 0.0) for x in X.head(2000).to_dict("records")]
    np.testing.assert_allclose(model.score(X.head(2000)), per_event)


def test_streaming_kmeans_centres_match_sklearn_kmeans_on_stationary_data() -> None:
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    truth = rng.uniform(-10, 10, size=(5, 3))
    labels = rng.integers(0, 5, 20_000)
    data = truth[labels] + rng.normal(0, 0.5, size=(20_000, 3))
    X = pd.DataFrame(data, columns=["a", "b", "c"])
    ours = StreamingKMeans(["a", "b", "c"], {}, k=5, decay_factor=1.0, seed=3)
    for start in range(0, len(X), 500):
        ours.learn(X.iloc[start : start + 500])
    ref = KMeans(n_clusters=5, n_init=10, random_state=0).fit(data).cluster_centers_
    got = ours.centres()
    rows, cols = linear_sum_assignment(((got[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    assert np.abs(got[rows] - ref[cols]).max() < 0.05


def test_streaming_linear_regression_matches_sklearn_sgd_regressor() -> None:
    from sklearn.linear_model import SGDRegressor
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(0, [1, 5, 20], size=(20_000, 3)), columns=["a", "b", "c"])
    y = X @ np.array([2.0, -0.5, 0.1]) + 7 + rng.normal(0, 0.5, 20_000)
    train, test = slice(0, 16_000), slice(16_000, None)
    ours = StreamingLinearRegression(["a", "b", "c"], {})
    scaler = StandardScaler().fit(X.iloc[train])
    ref = SGDRegressor(alpha=1e-4, learning_rate="invscaling", eta0=0.01, random_state=0)
    for start in range(0, 16_000, 500):
        part = slice(start, start + 500)
        ours.learn(X.iloc[part], y.iloc[part].to_numpy())
        ref.partial_fit(scaler.transform(X.iloc[part]), y.iloc[part].to_numpy())
    ours_r2 = regression_metrics(y.iloc[test], ours.score(X.iloc[test]))["r2"]
    ref_r2 = regression_metrics(y.iloc[test], ref.predict(scaler.transform(X.iloc[test])))["r2"]
    assert abs(ours_r2 - ref_r2) <= 0.01 and ours_r2 > 0.95, (ours_r2, ref_r2)
