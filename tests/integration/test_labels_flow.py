"""The labels flow is the labelled table's one writer: runs started together are serialised by the
Prefect global concurrency limit, and the table matches a from-scratch join after every round."""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path

import pytest

from rtml.flows.labels import labels_flow
from rtml.infra.config.clients import prefect_api
from rtml.pipelines.labelled import read_labelled
from rtml.pipelines.labels import INGEST_APP
from rtml.pipelines.tables import append, commit_batch
from tests.helpers import overrides_of, scoped_settings
from tests.unit.test_labelled import ID, LABEL, T0, _from_scratch, _labelled, _labels, _scores

pytestmark = pytest.mark.integration


def test_labels_runs_started_together_ten_times_leave_a_consistent_table(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path)
    errors: list[BaseException] = []
    results: list[dict] = []

    def run() -> None:
        try:
            results.append(labels_flow(overrides=overrides_of(s)))
            read_labelled(s)  # a retrain's read at the same moment
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with prefect_api(s):
        for r in range(10):
            commit_batch(s, "scores", _scores(r * 60, (r + 1) * 60), "q-scores", r)
            append(
                s,
                "labels",
                _labels(list(range(r * 60, r * 60 + 20, 2)), 1, T0 + r),
                {INGEST_APP: r + 1},
            )
            # each thread in a copy of this context: Prefect's temporary API setting is a context var
            threads = [threading.Thread(target=contextvars.copy_context().run, args=(run,)) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
            assert not errors, errors
            got = _labelled(s)
            expected = _from_scratch(s, T0 + ((r + 1) * 60 - 1) * 360_000)  # the newest event's time
            assert len(got) == len(expected) >= 10 * (r + 1)
            assert got.equals(expected)
    assert sum(x["new_scored"] for x in results) == 600  # each scored event merged exactly once
    assert read_labelled(s)[LABEL].sum() == 100 and read_labelled(s)[ID].is_unique
