"""Packaging: the wheel holds only ``rtml/…``; a registered champion loads and scores in a fresh
environment, from a working directory that has an unrelated ``models`` package of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version as dist_version
from pathlib import Path

import mlflow
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

SCORE = """
import json, sys
import mlflow, pandas as pd
import models  # the user's own package, found first on sys.path
assert models.OWNER == "someone else", "the user's models package was shadowed"
import rtml.models.learners.sgd_logistic as ours
assert ours.__file__.startswith(sys.prefix), ours.__file__  # rtml from the fresh environment
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.read_parquet("frame.parquet"))
print(json.dumps({"score": out["score"].tolist(), "rtml": ours.__file__}))
"""


def _build_wheel(out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            out,
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("rtml-*.whl"))


def _fresh_venv(where: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed; the other dependencies are read from this test's
    environment by path (a .pth line: that adds the folder, but runs none of its .pth files, so the
    editable install of the checkout stays invisible)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "rtml-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_wheel_holds_only_rtml_and_a_champion_loads_beside_a_foreign_models_package(
    stack, tmp_path: Path
) -> None:
    from rtml.features.featurise import featurise_history, model_frame
    from rtml.flows.bootstrap import bootstrap
    from rtml.infra.config.settings import load_settings
    from rtml.infra.config.spec import load_spec
    from rtml.pipelines.history import history_frame

    wheel = _build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("rtml/", "rtml-"))]
    assert outside == [], f"the wheel installs more than rtml: {outside[:5]}"
    for expected in (
        "rtml/models/learners/sgd_logistic.py",
        "rtml/infra/app/cli.py",
        "rtml/infra/config/specs/card_transactions.yaml",
        "rtml/expectations/suite_files/card_transactions/raw_events.json",
    ):
        assert expected in names
    assert not any(n.startswith("rtml/tests/") or n.startswith("rtml/benchmarks/") for n in names)

    settings = load_settings(
        use_default_file=False,
        overrides={**stack.model_dump(), "mlflow": {**stack.mlflow.model_dump(), "model_name": "rtml-wheel"}},
    )
    spec = load_spec()
    boot = bootstrap(settings, spec, n=4000)
    version = boot["champion"]
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/rtml-wheel/{version}/requirements.txt", tracking_uri=settings.tracking_uri
    )
    assert f"rtml=={dist_version('rtml')}" in Path(local).read_text().split()  # the model names its rtml

    python = _fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "user-project"
    (work / "models").mkdir(parents=True)
    (work / "models" / "__init__.py").write_text('OWNER = "someone else"\n')
    frame = model_frame(featurise_history(history_frame(spec, 300, 11, None), spec), spec)
    frame.to_parquet(work / "frame.parquet")
    (work / "score.py").write_text(SCORE)
    proc = subprocess.run(
        [python, "score.py", "models:/rtml-wheel@champion"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={"MLFLOW_TRACKING_URI": settings.tracking_uri, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rtml"].startswith(str(tmp_path / "venv"))
    expected = mlflow.pyfunc.load_model(f"models:/rtml-wheel/{version}").predict(frame)["score"]
    pd.testing.assert_series_equal(
        pd.Series(got["score"], name="score"), expected, check_exact=False, rtol=1e-12
    )

    # and in that environment the generic top-level names are not ours
    proc = subprocess.run([python, "-c", "import models"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "No module named 'models'" in proc.stderr
    proc = subprocess.run([python, "-c", "import rtml.models, rtml.flows"], cwd=tmp_path, capture_output=True)
    assert proc.returncode == 0
