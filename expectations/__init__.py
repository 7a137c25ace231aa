"""Data-quality gates. The Great Expectations suites arrive with the data-quality issue; until then
the training-batch gate enforces the minimal structural checks every retrain needs."""

from __future__ import annotations

from typing import Any


def gate_training_batch(settings: Any, spec: Any, window: Any) -> dict[str, Any]:
    """Minimal gate: labels valid, training rows and holdout present. Returns {passed, failed, checks}."""
    from models.training import labels_of

    checks = {
        "train_rows_present": len(window.train) > 0,
        "holdout_rows_present": len(window.holdout) > 0,
        "labels_valid": bool(spec.label and window.train[spec.label.field].notna().all()),
        "both_classes_in_train": len(window.train) > 0
        and 0 < labels_of(window.train, spec).sum() < len(window.train),
    }
    failed = [k for k, ok in checks.items() if not ok]
    return {"passed": not failed, "failed": failed, "checks": checks}
