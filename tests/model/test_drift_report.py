"""The drift report's panels: each feature on an axis a person can read."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rtml.models.monitoring.drift import numeric_stats
from rtml.models.monitoring.drift_report import SCORE_BANDS, figure


def test_heavy_tails_on_log_axes_flags_as_bars_and_the_score_over_bands() -> None:
    rng = np.random.default_rng(5)
    ref_vals = {
        "amount": rng.lognormal(3, 1.2, 1000),
        "card_present": rng.integers(0, 2, 1000).astype(float),
        "count_24h": rng.integers(1, 9, 1000).astype(float),
        "hour_frac": rng.uniform(0, 24, 1000),
        "score": rng.beta(0.3, 30, 1000),
    }
    current = pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 1.2, 400),
            "card_present": rng.integers(0, 2, 400).astype(float),
            "count_24h": rng.integers(1, 4, 400).astype(float),
            "hour_frac": rng.uniform(0, 24, 400),
            "score": rng.beta(0.3, 10, 400),
        }
    )
    numeric = {k: {"sample": sorted(v.tolist())} for k, v in ref_vals.items() if k != "score"}
    score_ref = {"sample": sorted(ref_vals["score"].tolist())}
    reference = {"numeric": numeric, "categorical": {}, "score": score_ref}
    stats = {k: numeric_stats({"sample": ref_vals[k]}, current[k].to_numpy()) for k in ref_vals}
    fig = figure(reference, current, stats)
    axes = {ax.get_title().split()[0]: ax for ax in fig.axes if ax.get_title()}
    assert axes["amount"].get_xscale() == "log" and "(log x)" in axes["amount"].get_title()
    assert axes["hour_frac"].get_xscale() == "linear"
    assert [t.get_text() for t in axes["card_present"].get_xticklabels()] == ["0 / false", "1 / true"]
    assert [t.get_text() for t in axes["count_24h"].get_xticklabels()][:3] == ["1", "2", "3"]
    bands = [t.get_text() for t in axes["score"].get_xticklabels()]
    assert len(bands) == len(SCORE_BANDS) - 1 and bands[0] == "0-0.001"
    # bars are shares of events: each model's bars sum to 1 over the bands
    heights = [p.get_height() for p in axes["score"].patches]
    assert abs(sum(heights[: len(bands)]) - 1) < 1e-9 and abs(sum(heights[len(bands) :]) - 1) < 1e-9
