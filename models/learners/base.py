"""The learner interface every model family implements, and the shared incremental encoder.

A learner learns from mini-batches (pandas frames of model inputs, see
``rtml.features.featurise.model_frame``) and scores mini-batches, vectorised.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from rtml.infra.config.spec import UNKNOWN_CATEGORY, StreamSpec


@runtime_checkable
class Learner(Protocol):
    """learn / score on mini-batches; ``threshold`` turns scores into decisions."""

    threshold: float

    def learn(self, X: pd.DataFrame, y: np.ndarray) -> Learner: ...

    def score(self, X: pd.DataFrame) -> np.ndarray: ...


def spec_inputs(spec: StreamSpec) -> tuple[list[str], dict[str, list[str]]]:
    """(numeric model inputs, categorical inputs with their known categories) of a spec."""
    return spec.model_numeric_inputs, {
        f.name: list(f.categories or []) for f in spec.features if not f.is_numeric
    }


class IncrementalEncoder:
    """Numeric columns scaled with running mean/variance; categoricals one-hot on the spec's categories.

    Missing and non-finite numeric values become the running mean (0 after scaling); unseen
    categories map to a dedicated unknown column.
    """

    def __init__(self, numeric: list[str], categories: dict[str, list[str]]) -> None:
        self.numeric = list(numeric)
        self.categories = {k: [*v, UNKNOWN_CATEGORY] for k, v in categories.items()}
        self.scaler = StandardScaler()
        self._fitted = False

    @classmethod
    def for_spec(cls, spec: StreamSpec) -> IncrementalEncoder:
        return cls(*spec_inputs(spec))

    @property
    def n_features(self) -> int:
        return len(self.numeric) + sum(len(v) for v in self.categories.values())

    def partial_fit(self, X: pd.DataFrame) -> IncrementalEncoder:
        num = X[self.numeric].to_numpy(dtype="float64")
        num = np.where(np.isfinite(num), num, np.nan)  # non-finite values count as missing
        if np.isnan(num).all(axis=0).any() and not self._fitted:
            num = np.nan_to_num(num)
        self.scaler.partial_fit(num)
        self._fitted = True
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        num = X[self.numeric].to_numpy(dtype="float64")
        if self._fitted:
            mean = self.scaler.mean_
            num = np.where(np.isfinite(num), num, mean)  # missing or non-finite: the running mean
            num = self.scaler.transform(num)
        num = np.nan_to_num(num, nan=0.0, posinf=0.0, neginf=0.0)
        blocks = [num]
        for name, cats in self.categories.items():
            values = X[name].astype("object").where(X[name].isin(cats[:-1]), UNKNOWN_CATEGORY)
            codes = pd.Categorical(values, categories=cats).codes
            onehot = np.zeros((len(X), len(cats)))
            onehot[np.arange(len(X)), codes] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks)
