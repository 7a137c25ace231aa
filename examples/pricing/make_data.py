"""Synthetic quotes for the dynamic-pricing example: a labelled history and a live stream.

The settled price follows base price, demand, competition, stock and promotions, with noise;
``--drift-at`` makes demand matter twice as much from that quote of the stream on. Seeded.

    python examples/pricing/make_data.py --out .rtml/examples/pricing [--n 20000] [--drift-at 2000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = ["grocery", "electronics", "apparel", "home", "toys"]


def quotes(n: int, seed: int, end_ms: int, drift_at: int | None = None, prefix: str = "q") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    products = rng.integers(0, 300, n)
    base = np.random.default_rng(7).lognormal(3.5, 0.8, 300)[products]  # a fixed catalogue
    category = np.array(CATEGORIES)[products % len(CATEGORIES)]
    demand = np.clip(rng.gamma(2.0, 1.0, n), 0, 10)
    competitor = base * rng.normal(1.0, 0.08, n)
    stock = rng.integers(0, 5000, n).astype(float)
    promo = rng.random(n) < 0.15
    sensitivity = np.where(np.arange(n) >= (drift_at if drift_at is not None else n), 0.16, 0.08)
    price = (
        base * (0.85 + sensitivity * demand)
        + 0.3 * (competitor - base)
        - 0.0004 * stock
        - np.where(promo, 0.1 * base, 0.0)
        + rng.normal(0, 1.0, n)
    )
    times = end_ms - (n - np.arange(n)) * 500  # two quotes a second, ending at end_ms
    return pd.DataFrame(
        {
            "quote_id": [f"{prefix}-{seed}-{i}" for i in range(n)],
            "event_time": times / 1000,  # epoch seconds (the spec's event_time_format: epoch_s)
            "product_id": [f"p{p}" for p in products],
            "base_price": base.round(2),
            "demand_index": demand.round(3),
            "competitor_price": competitor.round(2),
            "stock_level": stock,
            "category": category,
            "promo": promo,
            "price_paid": price.round(2),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(".rtml/examples/pricing"))
    ap.add_argument("--n", type=int, default=20_000, help="history size (the stream is n / 4)")
    ap.add_argument(
        "--drift-at", type=int, default=None, help="stream quote where demand sensitivity doubles"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1000)
    quotes(args.n, 1, now - 2 * 86_400_000, prefix="h").to_parquet(args.out / "history.parquet", index=False)
    quotes(args.n // 4, 2, now, args.drift_at, prefix="s").to_parquet(
        args.out / "stream.parquet", index=False
    )
    print(f"wrote {args.out}/history.parquet ({args.n} quotes) and {args.out}/stream.parquet ({args.n // 4})")


if __name__ == "__main__":
    main()
