"""`rtml demo`: the loop on the embedded local stack, ending with a summary.

Each demo run uses its own topics and sink folder (``<state_dir>/demo/<run>``) so repeated runs
never rescore old traffic; the registered model keeps its history, so versions accumulate in the
MLflow UI.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np

from infra import stack
from infra.settings import Settings, load_settings
from infra.spec import load_spec


def _demo_settings(settings: Settings, run: str) -> Settings:
    data = settings.model_dump()
    data["kafka"]["topics"] = {k: f"{v}.demo-{run}" for k, v in data["kafka"]["topics"].items()}
    data["spark"]["checkpoint_root"] = settings.state_dir / "demo" / run / "checkpoints"
    data["spark"]["sink_root"] = settings.state_dir / "demo" / run / "sink"
    data["spark"]["max_events_per_trigger"] = 20_000
    data["promotion"]["min_holdout"] = 1000
    data["promotion"]["min_positives"] = 5  # demo-sized holdouts
    return load_settings(use_default_file=False, overrides=data)


def _say(progress: bool, text: str) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]demo[/] {text}")


def _wait_scored(s: Settings, n: int, runner: threading.Thread, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and runner.is_alive():
        read = sum(json.loads(p.read_text())["read"] for p in (s.sink_root / "_batches").glob("*.json"))
        if read >= n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"scoring did not catch up with {n} events in {timeout_s:.0f}s")


def run_demo(
    settings: Settings,
    progress: bool = True,
    events: int = 24_000,
    drift_at: int = 8_000,
    rate: float = 2_000,
) -> dict[str, Any]:
    from flows.retrain import retrain_flow
    from infra.clients import configure_mlflow, prefect_api
    from models.bootstrap import bootstrap
    from pipelines.kafka_clients import connection_options, ensure_topics
    from pipelines.producer import generated_frames, stream_frames
    from pipelines.score_job import run_scoring

    t_start = time.monotonic()
    up = stack.up(settings)
    run = time.strftime("%Y%m%d%H%M%S")
    s = _demo_settings(settings, run)
    spec = load_spec(s.spec)
    configure_mlflow(s)
    ensure_topics(connection_options(s), s.kafka.topics.all(), s.kafka.partitions)
    _say(progress, f"stack up; run {run}; training the first champion on generated history")
    boot = bootstrap(s, spec, n=30_000, force=True)
    produced, retrains = [], []
    plan = [(events, 11, drift_at), (events, 12, 0)]
    # one continuous timeline (2 simulated events/s) ending about now, across both rounds
    start_ms = int(time.time() * 1000) - (200 + sum(n for n, _, _ in plan)) * 500
    stop, scoring = threading.Event(), {}
    runner = threading.Thread(target=lambda: scoring.update(run_scoring(s, spec, stop=stop)), daemon=True)
    runner.start()
    try:
        _say(progress, "warming up the scoring job (JVM, Python workers, model load)")
        produced.append(
            stream_frames(s, spec, generated_frames(spec, 200, 10, None, 200, start_ms=start_ms), seed=10)
        )
        start_ms += 200 * 500
        _wait_scored(s, 200, runner)
        warm_batches = len(list((s.sink_root / "_batches").glob("*.json")))
        for i, (n, seed, drift) in enumerate(plan, start=1):
            _say(
                progress,
                f"round {i}: producing {n} events at {rate} ev/s (drift at {drift}, 2% malformed, "
                "labels follow); the scoring job is running",
            )
            produced.append(
                stream_frames(
                    s,
                    spec,
                    generated_frames(spec, n, seed, drift, 500, start_ms=start_ms),
                    rate=rate,
                    malformed_rate=0.02,
                    seed=seed,
                )
            )
            start_ms += n * 500
            _wait_scored(s, sum(p["events"] for p in produced), runner)
            _say(progress, f"round {i}: retrain flow (Prefect)")
            with prefect_api(s):
                retrains.append(retrain_flow(overrides=json.loads(s.model_dump_json()), trigger="schedule"))
    finally:
        stop.set()
        runner.join(timeout=120)
    batches = [json.loads(p.read_text()) for p in sorted((s.sink_root / "_batches").glob("*.json"))]
    steady = [b for b in batches if b["read"] >= 1000][1:] or batches
    # after warm-up: the first micro-batches absorb JVM, worker and model start-up
    lat = [b for b in batches[warm_batches:] if b["latency_ms_p50"] is not None]
    promotions = [
        {
            "challenger": r["challenger"],
            "replaced": r["champion_before"],
            "deltas": {d["metric"]: d["delta"] for d in r["decision"]},
        }
        for r in retrains
        if r.get("outcome") == "promote"
    ]
    valid = sum(p["valid"] for p in produced)
    scored = scoring.get("scored", 0)
    summary = {
        "events_produced": sum(p["events"] for p in produced),
        "valid_events": valid,
        "events_scored": scored,
        "events_quarantined": scoring.get("quarantined", 0),
        "valid_events_lost": valid - scored,
        "throughput_events_per_s": round(
            sum(b["read"] for b in steady) / max(sum(b["seconds"] for b in steady), 1e-9), 1
        ),
        "latency_after_warmup": True,
        "latency_ms_p50": float(np.median([b["latency_ms_p50"] for b in lat])) if lat else None,
        "latency_ms_p99": float(max(b["latency_ms_p99"] for b in lat)) if lat else None,
        "versions_trained": 1 + sum(1 for r in retrains if r.get("challenger")),
        "retrains": len(retrains),
        "promotions": len(promotions),
        "champion": retrains[-1].get("champion_after", boot["champion"]),
        "seconds": round(time.monotonic() - t_start, 1),
    }
    by_reason = scoring.get("quarantined_by_reason", {})
    return {
        "ok": summary["valid_events_lost"] == 0,
        "summary": summary,
        "promotions": promotions,
        "retrains": [
            {k: r.get(k) for k in ("outcome", "reason", "challenger", "champion_after")} for r in retrains
        ],
        "quarantined_by_reason": by_reason,
        "stack": up,
        "tables": {
            "demo summary": summary,
            "quarantined by reason": by_reason,
            **{f"promotion v{p['replaced']} -> v{p['challenger']} (deltas)": p["deltas"] for p in promotions},
        },
        "urls": {
            "mlflow": settings.tracking_uri,
            "prefect": settings.prefect_api_url.removesuffix("/api"),
            "kafka": settings.kafka_bootstrap,
        },
    }
