"""The learner contract every model family implements, the family registry, and the shared encoder.

:class:`Learner` is the contract in code: an abstract base class every model family subclasses.
A subclass that declares its own ``family`` is registered under that name when it is defined
(:func:`registered`), which is where ``model.family`` settings are looked up
(:func:`rtml.models.learners.families.make_learner`). :func:`rtml.models.learners.check.check_learner`
runs the contract's checks on a family, built-in or third-party.

A learner learns from mini-batches (pandas frames of model inputs, see
``rtml.features.featurise.model_frame``) and scores mini-batches, vectorised.

>>> from rtml.models.learners import families  # importing it defines (registers) the built-in families
>>> sorted(registered())
['hoeffding_tree', 'sgd_logistic', 'streaming_kmeans', 'streaming_linear']
>>> registered()["streaming_kmeans"].tasks
('anomaly', 'classification')
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Self, get_args

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from rtml.infra.config.spec import TIME_FEATURE_MIN_SCALE, UNKNOWN_CATEGORY, StreamSpec
from rtml.models.learners.explain import Contributions, Explanation

#: The tasks a stream spec may declare (``StreamSpec.task``); a family's ``tasks`` are drawn from these.
SPEC_TASKS: tuple[str, ...] = get_args(StreamSpec.model_fields["task"].annotation)

_FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTRY: dict[str, type[Learner]] = {}


class Learner(abc.ABC):
    """The contract of a model family: learn from and score mini-batches of model inputs.

    A concrete subclass declares two class attributes, which register it as a family:

    - ``family``: its name in the ``model.family`` setting (lower-case letters, digits, ``_``),
      also reported by :meth:`params` under the key ``"family"``;
    - ``tasks``: the spec tasks it serves (from :data:`SPEC_TASKS`), e.g. ``("classification",)``.

    and an instance attribute:

    - ``threshold`` (float): scores at or above it are positive decisions (classification and
      anomaly tasks; finite there). Set from the spec or at construction, moved by :meth:`learn` or by
      the trainers' calibration; a regression-only family may leave it NaN (unused).

    It may override the class attribute ``epochs`` (default 2, a positive int): the shuffled passes
    a retrain makes over its window's rows unless ``retrain.epochs`` is set (a family that learns
    slowly from a few hundred rows takes more).

    Methods, all on pandas frames holding the spec's model input columns (numeric inputs as float,
    categorical inputs as strings):

    - :meth:`for_spec` builds a fresh learner for a spec's inputs;
    - :meth:`learn` updates it incrementally with one mini-batch and returns it;
    - :meth:`score` scores a mini-batch, vectorised;
    - :meth:`params` describes it for the experiment log;
    - :meth:`contributions` (optional: a family that does not override it cannot explain its scores)
      splits each row's raw output into signed per-input contributions, vectorised; :meth:`explain`
      keeps the top ``k`` of them and :meth:`score_explained` scores and explains in one pass.

    Learners are pickled into the model registry (and deep-copied to continue a champion): keep their
    state picklable, and their scores identical after a round trip.
    :func:`rtml.models.learners.check.check_learner` checks all of this on a family.
    """

    family: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    epochs: ClassVar[int] = 2
    threshold: float

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register a subclass that declares its own ``family`` (an intermediate base declares none)."""
        super().__init_subclass__(**kwargs)
        if "family" not in cls.__dict__:
            return
        name = f"{cls.__module__}.{cls.__qualname__}"
        family = cls.__dict__["family"]
        if not isinstance(family, str) or not _FAMILY_NAME.match(family):
            raise TypeError(f"{name}: family must be a lower-case name (letters, digits, _), got {family!r}")
        tasks = getattr(cls, "tasks", None)
        if not isinstance(tasks, tuple) or not tasks or not set(tasks) <= set(SPEC_TASKS):
            raise TypeError(f"{name}: tasks must be a non-empty tuple drawn from {SPEC_TASKS}, got {tasks!r}")
        missing = sorted(
            m
            for base in cls.__mro__[1:]
            for m in getattr(base, "__abstractmethods__", ())
            if getattr(getattr(cls, m, None), "__isabstractmethod__", False)
        )
        if missing:
            raise TypeError(f"{name}: family '{family}' does not implement {', '.join(missing)}")
        existing = _REGISTRY.get(family)
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise TypeError(
                f"{name}: family '{family}' is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        _REGISTRY[family] = cls  # the same class defined again (a module reload) replaces itself

    @classmethod
    @abc.abstractmethod
    def for_spec(cls, spec: StreamSpec, seed: int = 0, **params: Any) -> Self:
        """A fresh, untrained learner for the spec's model inputs (:func:`spec_inputs`).

        ``seed`` fixes every random choice (same seed, same data: same scores); ``params`` are the
        family's hyper-parameters (the ``model.params`` setting). An unknown parameter raises
        TypeError, as a constructor does.
        """

    @abc.abstractmethod
    def learn(self, X: pd.DataFrame, y: np.ndarray) -> Self:
        """Update with one mini-batch and return ``self``.

        ``y`` holds one target per row of ``X``: 0/1 for classification and anomaly specs (an
        anomaly learner may ignore it), numbers for regression. Any batch size from one row up; missing
        or non-finite numeric values and unseen (or missing) categories must not raise.
        """

    @abc.abstractmethod
    def score(self, X: pd.DataFrame) -> np.ndarray:
        """Scores of a mini-batch, vectorised: a float array with one finite value per row.

        A row's score depends on that row only (never on the rest of the batch) and scoring leaves the
        learner unchanged. Classification and anomaly scores lie in [0, 1] (higher: more likely
        positive), regression scores are the predicted values. Missing or non-finite numeric values
        and unseen categories still score finite.
        """

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """Description for the experiment log: JSON-serialisable, with ``"family"`` the family's name."""

    def contributions(self, X: pd.DataFrame) -> Contributions:
        """Each row's raw output split into additive contributions of the model inputs, vectorised.

        ``features`` are the model inputs by their own names (a categorical input's one-hot columns
        summed under its name); per row ``base + values.sum(1)`` equals ``raw`` within 1e-6, and
        ``raw`` is the output :meth:`score` is a monotone function of (``output`` names it: log-odds,
        probability, prediction, distance). Like :meth:`score`, a row's contributions depend on that
        row only. The default raises NotImplementedError: the family does not explain its scores.
        """
        raise NotImplementedError(f"model family '{self.family}' does not explain its scores")

    @classmethod
    def explains(cls) -> bool:
        """Whether the family implements :meth:`contributions`."""
        return cls.contributions is not Learner.contributions

    def explain(self, X: pd.DataFrame, top_k: int) -> Explanation:
        """The ``top_k`` contributions of each row by magnitude (:meth:`Contributions.top`)."""
        return self.contributions(X).top(top_k)

    def score_explained(self, X: pd.DataFrame, top_k: int) -> tuple[np.ndarray, Explanation]:
        """:meth:`score` and :meth:`explain` of one mini-batch; families override it to encode once."""
        return self.score(X), self.explain(X, top_k)


def registered() -> Mapping[str, type[Learner]]:
    """Every registered family by name: a read-only, live view (families defined later appear in it)."""
    return MappingProxyType(_REGISTRY)


def unregister(family: str) -> type[Learner]:
    """Remove a family from the registry and return its class (tests and plugins replacing a family)."""
    return _REGISTRY.pop(family)


def spec_inputs(spec: StreamSpec) -> tuple[list[str], dict[str, list[str]]]:
    """(numeric model inputs, categorical inputs with their known categories) of a spec."""
    return spec.model_numeric_inputs, {
        f.name: list(f.categories or []) for f in spec.features if not f.is_numeric
    }


class IncrementalEncoder:
    """Numeric columns scaled with running mean/variance; categoricals one-hot on the spec's categories.

    Missing and non-finite numeric values become the running mean (0 after scaling); unseen
    categories map to a dedicated unknown column. A time feature is scaled by at least its unit
    (:data:`TIME_FEATURE_MIN_SCALE`): nearly constant in a short history, it must not put the next
    hour's events dozens of standard deviations away.
    """

    def __init__(self, numeric: list[str], categories: dict[str, list[str]]) -> None:
        self.numeric = list(numeric)
        self.categories = {k: [*v, UNKNOWN_CATEGORY] for k, v in categories.items()}
        self.scaler = StandardScaler()
        self._fitted = False
        self.category_counts = {k: np.zeros(len(v)) for k, v in self.categories.items()}

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
        floor = np.array([TIME_FEATURE_MIN_SCALE.get(c, 0.0) for c in self.numeric])
        self.scaler.scale_ = np.maximum(self.scaler.scale_, floor)
        self._fitted = True
        counts = getattr(self, "category_counts", None)
        if counts is not None:  # encoders pickled before explanations have none: reference without it
            for name, cats in self.categories.items():
                counts[name] += np.bincount(self._codes(X, name), minlength=len(cats))
        return self

    def _codes(self, X: pd.DataFrame, name: str) -> np.ndarray:
        cats = self.categories[name]
        values = X[name].astype("object").where(X[name].isin(cats[:-1]), UNKNOWN_CATEGORY)
        return pd.Categorical(values, categories=cats).codes

    def reference(self) -> np.ndarray:
        """The mean encoded row of the data learnt from: 0 for scaled numeric columns (the running
        mean), each category's frequency in its one-hot block (0 if the encoder never counted them)."""
        blocks = [np.zeros(len(self.numeric))]
        counts = getattr(self, "category_counts", {})
        for name, cats in self.categories.items():
            c = counts.get(name, np.zeros(len(cats)))
            blocks.append(c / c.sum() if c.sum() > 0 else np.zeros(len(cats)))
        return np.concatenate(blocks)

    @property
    def inputs(self) -> tuple[tuple[str, ...], list[int]]:
        """(model input names, the width of each categorical input's one-hot block)."""
        return (*self.numeric, *self.categories), [len(v) for v in self.categories.values()]

    def encode(self, X: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
        """The parts of :meth:`transform`: the scaled numeric block and each categorical input's codes
        (positions in its categories, the unknown slot last)."""
        num = X[self.numeric].to_numpy(dtype="float64")
        if self._fitted:
            mean = self.scaler.mean_
            num = np.where(np.isfinite(num), num, mean)  # missing or non-finite: the running mean
            num = self.scaler.transform(num)
        num = np.nan_to_num(num, nan=0.0, posinf=0.0, neginf=0.0)
        return num, [self._codes(X, name) for name in self.categories]

    def onehot(self, num: np.ndarray, codes: list[np.ndarray]) -> np.ndarray:
        """The encoded matrix from :meth:`encode`'s parts."""
        blocks = [num]
        for cats, c in zip(self.categories.values(), codes, strict=True):
            onehot = np.zeros((len(num), len(cats)))
            onehot[np.arange(len(num)), c] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Scaled numeric columns, then each categorical input's one-hot block."""
        return self.onehot(*self.encode(X))
