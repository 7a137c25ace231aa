"""Streaming linear regression by SGD (scikit-learn ``partial_fit``) with incremental scaling.

For the regression task (e.g. dynamic pricing): ``score`` is the predicted value. Judged on RMSE,
MAE and R^2 (:func:`regression_metrics`); the threshold is unused.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame({"x": rng.normal(0, 1, 2000), "c": rng.choice(["a", "b"], 2000)})
>>> y = 3 * X["x"].to_numpy() + np.where(X["c"] == "a", 5.0, -5.0) + rng.normal(0, 0.1, 2000)
>>> m = StreamingLinearRegression(["x"], {"c": ["a", "b"]})
>>> for _ in range(5):
...     _ = m.learn(X, y)
>>> bool(regression_metrics(y, m.score(X))["r2"] > 0.99)
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDRegressor

from rtml.infra.config.spec import StreamSpec
from rtml.models.learners import explain
from rtml.models.learners.base import IncrementalEncoder, Learner, spec_inputs


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R^2 (NaN where undefined)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if len(y_true) == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "n": 0}
    return {
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
        "n": int(len(y_true)),
    }


class StreamingLinearRegression(Learner):
    """Linear regression by SGD: scores are predicted values; the threshold is unused (NaN)."""

    family = "streaming_linear"
    tasks = ("regression",)

    def __init__(
        self,
        numeric: list[str],
        categories: dict[str, list[str]],
        alpha: float = 1e-4,
        learning_rate: str = "invscaling",
        eta0: float = 0.01,
        threshold: float = float("nan"),
        seed: int = 0,
    ) -> None:
        self.encoder = IncrementalEncoder(numeric, categories)
        self.alpha = alpha
        self.threshold = threshold
        self.model = SGDRegressor(alpha=alpha, learning_rate=learning_rate, eta0=eta0, random_state=seed)
        self.n_seen = 0

    @classmethod
    def for_spec(cls, spec: StreamSpec, seed: int = 0, **params: object) -> StreamingLinearRegression:
        return cls(*spec_inputs(spec), seed=seed, **params)  # type: ignore[arg-type]

    def params(self) -> dict[str, object]:
        return {"family": self.family, "alpha": self.alpha, "n_features": self.encoder.n_features}

    def learn(self, X: pd.DataFrame, y: np.ndarray) -> StreamingLinearRegression:
        self.encoder.partial_fit(X)
        self.model.partial_fit(self.encoder.transform(X), np.asarray(y, dtype=float))
        self.n_seen += len(X)
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        if self.n_seen == 0:
            return np.zeros(len(X))
        return self.model.predict(self.encoder.transform(X))

    def contributions(self, X: pd.DataFrame) -> explain.Contributions:
        """Prediction contributions: coefficient x (scaled value - reference mean), one-hot summed."""
        enc = self.encoder
        names, widths = enc.inputs
        if self.n_seen == 0:
            zeros = np.zeros(len(X))
            return explain.Contributions(names, np.zeros((len(X), len(names))), zeros, zeros, "prediction")
        parts = enc.encode(X)
        raw = self.model.predict(enc.onehot(*parts))
        w, b = self.model.coef_, float(self.model.intercept_[0])
        return explain.linear(parts, widths, w, b, enc.reference(), names, raw, "prediction")

    def score_explained(self, X: pd.DataFrame, top_k: int) -> tuple[np.ndarray, explain.Explanation]:
        """Scores and their top-k contributions, encoded once."""
        c = self.contributions(X)
        return c.raw, c.top(top_k)
