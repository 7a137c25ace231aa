"""Label-ingest offsets travel with the labels table: an ingest on another machine (its own disk, no
``_offsets.json``) or after the file was lost resumes from the offsets in the newest read's commit."""

from __future__ import annotations

import json
from pathlib import Path

from rtml.pipelines.labels import _append_labels, _resume_point
from tests.unit.test_labelled import SPEC, T0, _labels, _settings


def test_resume_point_prefers_the_table_when_it_committed_a_later_read(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    local = tmp_path / "_offsets.json"
    assert _resume_point(s, local) == ({}, 0)  # nothing anywhere: from the start
    frame = _labels([1, 2], 1, T0).to_pandas()
    _append_labels(s, SPEC, frame, 1, {"0": 2, "1": 0, "_seq": 1})
    _append_labels(s, SPEC, frame, 2, {"0": 2, "1": 7, "_seq": 2})
    assert _resume_point(s, local) == ({"0": 2, "1": 7}, 2)  # no local file: the table's
    local.write_text(json.dumps({"0": 2, "1": 0, "_seq": 1}))
    assert _resume_point(s, local) == ({"0": 2, "1": 7}, 2)  # a stale local file: the table's
    local.write_text(json.dumps({"0": 5, "1": 7, "_seq": 2}))
    assert _resume_point(s, local) == ({"0": 5, "1": 7}, 2)  # local as far as the table: local
    # a replayed read (same seq) commits nothing and leaves the stored offsets as they were
    _append_labels(s, SPEC, frame, 2, {"0": 99, "1": 99, "_seq": 2})
    local.unlink()
    assert _resume_point(s, local) == ({"0": 2, "1": 7}, 2)


def test_reads_committed_without_offsets_fall_back_to_the_local_file(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    local = tmp_path / "_offsets.json"
    _append_labels(s, SPEC, _labels([1], 1, T0).to_pandas(), 3)  # a table written before offsets
    local.write_text(json.dumps({"0": 4, "_seq": 1}))
    assert _resume_point(s, local) == ({"0": 4}, 1)
