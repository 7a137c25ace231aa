"""Data-quality gates with Great Expectations: suites (suites.py), runner (gate.py), retrain gate
(training.py) and stream gate (stream.py)."""
