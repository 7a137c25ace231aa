"""Logistic regression trained by SGD, incrementally (scikit-learn ``partial_fit``).

>>> import numpy as np, pandas as pd
>>> X = pd.DataFrame({"x": np.r_[np.zeros(50), np.ones(50)], "c": ["a"] * 100})
>>> y = np.r_[np.zeros(50), np.ones(50)].astype(int)
>>> m = SGDLogistic(["x"], {"c": ["a", "b"]}, seed=0)
>>> for _ in range(5):
...     _ = m.learn(X, y)
>>> bool(m.score(X.iloc[[0]])[0] < 0.5 < m.score(X.iloc[[99]])[0])
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier

from rtml.infra.config.spec import StreamSpec
from rtml.models.learners import explain
from rtml.models.learners.base import IncrementalEncoder, Learner, spec_inputs


class SGDLogistic(Learner):
    """Logistic regression by SGD: P(positive) scores, class-weighted toward positives."""

    family = "sgd_logistic"
    tasks = ("classification",)

    def __init__(
        self,
        numeric: list[str],
        categories: dict[str, list[str]],
        alpha: float = 1e-2,
        positive_weight: float = 10.0,
        learning_rate: str = "optimal",
        threshold: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.encoder = IncrementalEncoder(numeric, categories)
        self.alpha = alpha
        self.positive_weight = positive_weight
        self.threshold = threshold
        self.model = SGDClassifier(
            loss="log_loss", alpha=alpha, learning_rate=learning_rate, random_state=seed
        )
        self.n_seen = 0

    @classmethod
    def for_spec(cls, spec: StreamSpec, seed: int = 0, **params: float) -> SGDLogistic:
        return cls(*spec_inputs(spec), threshold=spec.decision_threshold, seed=seed, **params)  # type: ignore[arg-type]

    def params(self) -> dict[str, float | str]:
        return {
            "family": self.family,
            "alpha": self.alpha,
            "positive_weight": self.positive_weight,
            "n_features": self.encoder.n_features,
        }

    def learn(self, X: pd.DataFrame, y: np.ndarray) -> SGDLogistic:
        y = np.asarray(y).astype(np.int64)
        self.encoder.partial_fit(X)
        weights = np.where(y == 1, self.positive_weight, 1.0)
        self.model.partial_fit(self.encoder.transform(X), y, classes=np.array([0, 1]), sample_weight=weights)
        self.n_seen += len(y)
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self.encoder.transform(X))[:, 1]

    def contributions(self, X: pd.DataFrame) -> explain.Contributions:
        """Log-odds contributions: coefficient x (scaled value - reference mean), one-hot summed."""
        parts = self.encoder.encode(X)
        return self._contributions(parts, self.model.decision_function(self.encoder.onehot(*parts)))

    def _contributions(self, parts: tuple, logit: np.ndarray) -> explain.Contributions:
        enc = self.encoder
        names, widths = enc.inputs
        w, b = self.model.coef_[0], float(self.model.intercept_[0])
        return explain.linear(parts, widths, w, b, enc.reference(), names, logit, "log_odds")

    def score_explained(self, X: pd.DataFrame, top_k: int) -> tuple[np.ndarray, explain.Explanation]:
        """Scores (as :meth:`score`: the logistic of the decision function) and top-k, encoded once."""
        from scipy.special import expit

        parts = self.encoder.encode(X)
        logit = self.model.decision_function(self.encoder.onehot(*parts))
        return expit(logit), self._contributions(parts, logit).top(top_k)
