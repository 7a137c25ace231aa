"""MLflow packaging and registry access: every model is a pyfunc; promotion moves aliases.

Models load only from the configured registry (``models:/<name>/<version>``), resolved through
``@champion``; no stages.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rtml.infra.config.settings import Settings

CHAMPION = "champion"
PREVIOUS = "previous-champion"
SHADOW = "shadow"  # scored beside the champion, never acted on (rtml shadow)
PROFILE_ARTIFACT = "reference/profile.json"  # the version's reference profile (models.monitoring.profile)


def pip_requirements() -> list[str]:
    """What a registered model needs to load: the rtml release that built it (its learners' classes
    live in ``rtml.models.learners``) and the libraries they are made of.

    >>> pip_requirements()[0].startswith("rtml==")
    True
    """
    from importlib.metadata import version

    return [
        f"rtml=={version('rtml')}",
        "scikit-learn>=1.5,<2",
        "pandas>=2.2,<3",
        "numpy>=1.26",
        "river>=0.22,<1",
    ]


def _pyfunc_class() -> type:
    import mlflow.pyfunc

    class RtmlModel(mlflow.pyfunc.PythonModel):
        """A learner plus its input columns; predicts a frame with ``score`` and ``decision``."""

        def __init__(self, learner: Any, columns: list[str]) -> None:
            self.learner = learner
            self.columns = columns

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict | None = None
        ) -> pd.DataFrame:
            X = model_input[self.columns]
            score = self.learner.score(X)
            return pd.DataFrame(
                {"score": score, "decision": (score >= self.learner.threshold).astype(np.int64)}
            )

    return RtmlModel


@dataclass
class Registered:
    version: str
    run_id: str
    model_uri: str


def log_and_register(
    settings: Settings,
    learner: Any,
    X_example: pd.DataFrame,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    run_name: str,
    profile: dict[str, Any] | None = None,
) -> Registered:
    """Log the learner as a new run + new registered model version (never an overwrite)."""
    import mlflow
    from mlflow.models import infer_signature

    from rtml.infra.config.clients import configure_mlflow

    configure_mlflow(settings)
    mlflow.set_experiment(settings.mlflow.experiment)
    model = _pyfunc_class()(learner, list(X_example.columns))
    example = X_example.head(5)
    signature = infer_signature(example, model.predict(None, example))
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN is not logged
        mlflow.set_tags(tags)
        if profile is not None:
            mlflow.log_dict(profile, PROFILE_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=settings.mlflow.model_name,
        )
    return Registered(str(info.registered_model_version), run.info.run_id, info.model_uri)


def client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def alias_version(settings: Settings, alias: str = CHAMPION) -> str | None:
    """Version the alias points to, or None if the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(settings).get_model_version_by_alias(settings.mlflow.model_name, alias).version)
    except MlflowException:
        return None


def tag_version(settings: Settings, version: str, tags: dict[str, str]) -> None:
    """Set tags on a registered model version (values capped at MLflow's tag length)."""
    c = client(settings)
    for key, value in tags.items():
        c.set_model_version_tag(settings.mlflow.model_name, version, key, value[:5000])


def describe_version(settings: Settings, version: str, text: str) -> None:
    """Set a registered version's description (Markdown: MLflow's model version page renders it)."""
    client(settings).update_model_version(settings.mlflow.model_name, version, description=text[:5000])


def set_alias(settings: Settings, version: str, alias: str = CHAMPION) -> None:
    client(settings).set_registered_model_alias(settings.mlflow.model_name, alias, version)


_CACHE: collections.OrderedDict[tuple[str, str, str], Any] = collections.OrderedDict()
_CACHE_SIZE = 3  # the champion, the shadow, and the champion being switched to
_LOCK = threading.Lock()


def load_model(tracking_uri: str, name: str, version: str) -> Any:
    """The RtmlModel of one registered version; cached per process (Python workers are reused), the
    :data:`_CACHE_SIZE` most recently used: a champion and its shadow scored in the same task must not
    evict each other (each micro-batch would download both again)."""
    key = (tracking_uri, name, version)
    with _LOCK:
        if key not in _CACHE:
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
            _CACHE[key] = loaded.unwrap_python_model()
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return _CACHE[key]
