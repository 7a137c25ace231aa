"""Hoeffding tree classifier (River), learning from mini-batches, scoring them vectorised.

Learning goes through River's ``learn_one`` (a Hoeffding tree has no batch update). Scoring does
not: :meth:`HoeffdingTree.score` walks the tree once per *node* with numpy masks over the whole
batch, instead of once per event, then reads each leaf's class distribution. That is exact for
majority-class leaves (``leaf_prediction="mc"``, the default here); naive-Bayes leaves (``"nba"``)
fall back to River's per-event leaf prediction.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame({"x": rng.random(4000), "c": rng.choice(["a", "b"], 4000)})
>>> y = ((X["x"] > 0.5) & (X["c"] == "a")).to_numpy().astype(int)
>>> m = HoeffdingTree(["x"], {"c": ["a", "b"]}, grace_period=100).learn(X, y)
>>> bool(((m.score(X) >= 0.5) == y).mean() > 0.95)
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rtml.infra.config.spec import UNKNOWN_CATEGORY, StreamSpec
from rtml.models.learners.base import IncrementalEncoder, Learner, spec_inputs


class HoeffdingTree(Learner):
    """River Hoeffding (adaptive) tree classifier: P(positive) scores, scored one pass per node."""

    family = "hoeffding_tree"
    tasks = ("classification",)

    def __init__(
        self,
        numeric: list[str],
        categories: dict[str, list[str]],
        grace_period: int = 200,
        delta: float = 1e-7,
        max_depth: int | None = None,
        leaf_prediction: str = "mc",
        adaptive: bool = False,
        positive_weight: float = 10.0,
        threshold: float = 0.5,
        seed: int = 0,
    ) -> None:
        from river import tree

        self.numeric = list(numeric)
        self.categories = {k: list(v) for k, v in categories.items()}
        self.encoder = IncrementalEncoder(numeric, categories)  # running means: missing numeric values
        self.positive_weight = positive_weight
        self.threshold = threshold
        self.hyper = {
            "grace_period": grace_period,
            "delta": delta,
            "max_depth": max_depth,
            "leaf_prediction": leaf_prediction,
            "adaptive": adaptive,
        }
        kwargs = {"grace_period": grace_period, "delta": delta, "max_depth": max_depth}
        kwargs["leaf_prediction"] = leaf_prediction
        self.model = (
            tree.HoeffdingAdaptiveTreeClassifier(**kwargs, seed=seed)
            if adaptive
            else tree.HoeffdingTreeClassifier(**kwargs)
        )
        self.n_seen = 0

    @classmethod
    def for_spec(cls, spec: StreamSpec, seed: int = 0, **params: object) -> HoeffdingTree:
        return cls(*spec_inputs(spec), threshold=spec.decision_threshold, seed=seed, **params)  # type: ignore[arg-type]

    def params(self) -> dict[str, object]:
        return {"family": self.family, "positive_weight": self.positive_weight, **self.hyper}

    def _columns(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """Numeric inputs, missing or non-finite values as the running mean; unknown categories as one."""
        num = X[self.numeric].to_numpy(dtype="float64")
        if self.encoder._fitted:
            num = np.where(np.isfinite(num), num, self.encoder.scaler.mean_)
        num = np.nan_to_num(num, nan=0.0, posinf=0.0, neginf=0.0)
        cols = {name: num[:, i] for i, name in enumerate(self.numeric)}
        for name, known in self.categories.items():
            values = X[name].astype("object").to_numpy()
            cols[name] = np.where(pd.Series(values).isin(known).to_numpy(), values, UNKNOWN_CATEGORY)
        return cols

    def learn(self, X: pd.DataFrame, y: np.ndarray) -> HoeffdingTree:
        y = np.asarray(y).astype(np.int64)
        self.encoder.partial_fit(X)
        cols = self._columns(X)
        names = list(cols)
        weights = np.where(y == 1, self.positive_weight, 1.0)
        learn_one = self.model.learn_one
        for i, row in enumerate(zip(*(cols[n].tolist() for n in names), strict=True)):
            learn_one(dict(zip(names, row, strict=True)), int(y[i]), w=float(weights[i]))
        self.n_seen += len(y)
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """P(positive) for every row, one numpy pass per tree node."""
        out = np.zeros(len(X))
        root = getattr(self.model, "_root", None)
        if root is None or len(X) == 0:
            return out
        cols = self._columns(X)
        self._fill(root, cols, np.arange(len(X)), out)
        return out

    def _fill(self, node: object, cols: dict[str, np.ndarray], idx: np.ndarray, out: np.ndarray) -> None:
        from river.tree.nodes.branch import (
            DTBranch,
            NominalBinaryBranch,
            NominalMultiwayBranch,
            NumericBinaryBranch,
            NumericMultiwayBranch,
        )

        if len(idx) == 0:
            return
        if not isinstance(node, DTBranch):
            self._leaf(node, cols, idx, out)
            return
        v = cols[node.feature][idx]
        if isinstance(node, NumericBinaryBranch):
            branch = np.where(v.astype(float) <= node.threshold, 0, 1)
        elif isinstance(node, NominalBinaryBranch):
            branch = np.where(v == node.value, 0, 1)
        else:
            if isinstance(node, NumericMultiwayBranch):
                v = np.floor(v.astype(float) / node.radius).astype(np.int64)
            elif not isinstance(
                node, NominalMultiwayBranch
            ):  # pragma: no cover - a branch type we do not know
                raise TypeError(f"unsupported tree branch {type(node).__name__}")
            common, _ = node.most_common_path()  # River's rule for values it never split on
            branch = np.array([node._mapping.get(x, common) for x in v.tolist()], dtype=np.int64)
        for b, child in enumerate(node.children):
            self._fill(child, cols, idx[branch == b], out)

    def _leaf(self, leaf: object, cols: dict[str, np.ndarray], idx: np.ndarray, out: np.ndarray) -> None:
        if self.hyper["leaf_prediction"] == "mc":
            proba = leaf.prediction(None, tree=self.model)  # type: ignore[attr-defined]
            total = sum(proba.values()) or 1.0
            out[idx] = proba.get(1, 0.0) / total
            return
        names = list(cols)
        for i in idx:  # naive-Bayes leaves depend on x: River's own per-event prediction
            x = {n: cols[n][i] for n in names}
            proba = leaf.prediction(x, tree=self.model)  # type: ignore[attr-defined]
            total = sum(proba.values()) or 1.0
            out[i] = proba.get(1, 0.0) / total
