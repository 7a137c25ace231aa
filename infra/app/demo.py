"""`rtml demo`: the whole loop on the embedded local stack, ending by itself with a summary.

Starts the stack, registers the deployments (Prefect UI lists them with their schedules) and the
alert automation, bootstraps a champion, runs the scoring job under its supervisor flow, streams
two rounds of events (a drift in the first, labels following), and after each round runs what the
schedules would run, at demo speed: quality check, drift check (alerts go through the automation to
a local on-call webhook), retrain with promotion decision. Each run uses its own topics and sink
folder (``<state_dir>/demo/<run>``); the registered model keeps its history, so versions accumulate
in the MLflow UI. Without ``keep_running`` the services the demo started are stopped at the end.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from rtml.infra.app import stack
from rtml.infra.app.progress import Display
from rtml.infra.config.settings import Settings, load_settings, public_overrides
from rtml.infra.config.spec import load_spec


def _demo_settings(settings: Settings, run: str, oncall_url: str | None) -> Settings:
    data = settings.model_dump()  # python mode: secrets stay SecretStr objects, never strings
    data["kafka"]["topics"] = {k: f"{v}.demo-{run}" for k, v in data["kafka"]["topics"].items()}
    data["spark"]["checkpoint_root"] = settings.state_dir / "demo" / run / "checkpoints"
    data["spark"]["sink_root"] = settings.state_dir / "demo" / run / "sink"
    data["spark"]["max_events_per_trigger"] = 20_000
    data["promotion"]["min_holdout"] = 1000
    data["promotion"]["min_positives"] = 5  # demo-sized holdouts
    data["drift"].update(window="1h", cooldown="1h", min_events=500)
    data["quality"]["stream_every_batches"] = 5
    if oncall_url is not None:  # no on-call route configured: a local stand-in shows the alert path
        data["alerts"].update(webhook_url=oncall_url, notification_block="rtml-demo-oncall")
    return load_settings(use_default_file=False, overrides=data)


def _wait_scored(s: Settings, n: int, alive: threading.Thread, view: Display, timeout_s: float = 300) -> None:
    from rtml.pipelines.scoring import read_batch_records

    deadline = time.monotonic() + timeout_s
    with view.bar("  scored or quarantined", n) as bar:
        while time.monotonic() < deadline and alive.is_alive():
            read = sum(b["read"] for b in read_batch_records(s))
            bar.update(read)
            if read >= n:
                return
            time.sleep(0.5)
    raise RuntimeError(f"scoring did not catch up with {n} events in {timeout_s:.0f}s")


def _has_oncall_route(settings: Settings) -> bool:
    from rtml.flows.alerting import AlertingError, notification_block_id

    if settings.alerts.webhook_url is not None:
        return True
    try:
        notification_block_id(settings)
        return True
    except AlertingError:
        return False


def run_demo(
    settings: Settings,
    progress: bool = True,
    events: int = 24_000,
    drift_at: int = 8_000,
    rate: float = 2_000,
    keep_running: bool = False,
) -> dict[str, Any]:
    """Run the demo; the services it started are stopped at the end -- also when it fails --
    unless ``keep_running``."""
    up = stack.up(settings)
    started_here = [n for n, svc in up["services"].items() if svc.get("action") in ("started", "replaced")]
    stop_after = started_here and not keep_running
    try:
        result = _demo_body(settings, up, progress, events, drift_at, rate)
    except BaseException:
        if stop_after:
            stack.down(settings)
        raise
    result["stopped"] = sorted(stack.down(settings)["stopped"]) if stop_after else []
    return result


def _demo_body(
    settings: Settings, up: dict[str, Any], progress: bool, events: int, drift_at: int, rate: float
) -> dict[str, Any]:
    from rtml.flows.bootstrap import bootstrap
    from rtml.flows.deployments import apply_all
    from rtml.flows.drift import drift_flow
    from rtml.flows.labels import labels_flow
    from rtml.flows.quality import quality_flow
    from rtml.flows.retrain import retrain_flow
    from rtml.flows.score import score_flow
    from rtml.infra.app.oncall import WebhookReceiver
    from rtml.infra.config.clients import configure_mlflow, prefect_api
    from rtml.infra.config.kafka_clients import connection_options, ensure_topics
    from rtml.pipelines.producer import generated_frames, stream_frames
    from rtml.pipelines.scoring import read_batch_records, summarise_batches
    from rtml.pipelines.supervisor import STOP_FILE

    view = Display(quiet=not progress, prefix="demo")
    t_start = time.monotonic()
    run = time.strftime("%Y%m%d%H%M%S")
    with prefect_api(settings):
        local_oncall = not _has_oncall_route(settings)
    oncall = (
        WebhookReceiver(settings.host, log_file=settings.state_dir / f"demo-{run}-oncall.jsonl")
        if local_oncall
        else None
    )
    s = _demo_settings(settings, run, oncall.url if oncall else None)
    overrides = public_overrides(s)
    spec = load_spec(s.spec)
    configure_mlflow(s)
    ensure_topics(connection_options(s), s.kafka.topics.all(), s.kafka.partitions)
    produced, retrains, drifts, qualities = [], [], [], []
    try:
        with prefect_api(s):
            deployed = apply_all(s, None, overrides)
        view.say(
            f"stack up; run {run}; {len(deployed['deployments'])} deployments registered; "
            "training the first champion"
        )
        now_ms = demo_clock(int(time.time() * 1000))
        boot = bootstrap(s, spec, n=30_000, force=True, now_ms=now_ms)
        plan = [(events, 11, drift_at), (events, 12, 0)]
        # one continuous timeline (2 simulated events/s) ending at the demo's clock, across both rounds
        start_ms = now_ms - (200 + sum(n for n, _, _ in plan)) * 500
        supervised: dict[str, Any] = {}

        def supervise() -> None:
            with prefect_api(s):
                supervised.update(score_flow(overrides=overrides, heartbeat_s=5.0))

        runner = threading.Thread(target=supervise, daemon=True, name="rtml-demo-scoring")
        runner.start()
        try:
            view.say("scoring job starting under its supervisor flow; warming up with 200 events")
            produced.append(
                stream_frames(s, spec, generated_frames(spec, 200, 10, None, 200, start_ms=start_ms), seed=10)
            )
            start_ms += 200 * 500
            _wait_scored(s, 200, runner, view, timeout_s=240)
            warm_batches = len(read_batch_records(s))
            for i, (n, seed, drift) in enumerate(plan, start=1):
                view.say(
                    f"round {i}: {n:,} events at {rate:,.0f}/s "
                    f"({f'drift at event {drift}' if drift else 'after the drift'}, "
                    "2% malformed, labels follow)"
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
                _wait_scored(s, sum(p["events"] for p in produced), runner, view)
                with prefect_api(s):
                    view.say(f"round {i}: quality check, labels, drift check, retrain (Prefect flows)")
                    q = quality_flow(overrides=overrides, return_state=True)
                    qualities.append(
                        q.result() if q.is_completed() else {"verdict": "failed", "message": str(q.message)}
                    )
                    labels_flow(overrides=overrides)  # the labelled table's writer, read by the drift check
                    drifts.append(drift_flow(overrides=overrides))
                    for f in drifts[-1]["findings"]:
                        view.say(
                            f"  drift: {f['kind']} {f['feature']} "
                            f"{f['statistic']}={f['value']:.3g} ({f['severity']})"
                        )
                    retrains.append(retrain_flow(overrides=overrides, trigger="schedule"))
                    view.say(f"  retrain: {retrains[-1]['outcome']} -- {retrains[-1]['reason']}")
        finally:
            (s.state_dir / "run" / STOP_FILE).touch()
            runner.join(timeout=180)
        time.sleep(3 if oncall else 0)  # the automation delivers within a few seconds
    finally:
        if oncall is not None:
            oncall.close()
    batches = read_batch_records(s)
    scoring = summarise_batches(batches)
    steady = [b for b in batches if b["read"] >= 1000][1:] or batches
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
    alerts = [
        {"check": i, "champion": d["champion"], **f}
        for i, d in enumerate(drifts, start=1)
        for f in d["findings"]
        if f"{f['kind']}.{f['feature']}" in d["alerts_sent"]
    ]
    valid = sum(p["valid"] for p in produced)
    summary = {
        "events_produced": sum(p["events"] for p in produced),
        "valid_events": valid,
        "events_scored": scoring["scored"],
        "events_quarantined": scoring["quarantined"],
        "events_duplicates": scoring["duplicates"],
        "valid_events_lost": valid - scoring["scored"],
        "throughput_events_per_s": round(
            sum(b["read"] for b in steady) / max(sum(b["seconds"] for b in steady), 1e-9), 1
        ),
        "latency_ms_p50": float(np.median([b["latency_ms_p50"] for b in lat])) if lat else None,
        "latency_ms_p99": float(max(b["latency_ms_p99"] for b in lat)) if lat else None,
        "versions_trained": 1 + sum(1 for r in retrains if r.get("challenger")),
        "retrains": len(retrains),
        "promotions": len(promotions),
        "drift_checks": len(drifts),
        "drift_alerts": len(alerts),
        "alerts_delivered_to_oncall": len(oncall.of(s.mlflow.model_name)) if oncall else None,
        "quality_checks_passed": sum(1 for q in qualities if q.get("verdict") == "passed"),
        "scoring_job_restarts": supervised.get("restarts"),
        "champion": retrains[-1].get("champion_after", boot["champion"]) if retrains else boot["champion"],
        "seconds": round(time.monotonic() - t_start, 1),
    }
    return {
        "ok": summary["valid_events_lost"] == 0,
        "run": run,
        "summary": summary,
        "promotions": promotions,
        "drift_alerts": [
            {
                k: a[k]
                for k in (
                    "check",
                    "champion",
                    "kind",
                    "feature",
                    "statistic",
                    "value",
                    "threshold",
                    "severity",
                )
            }
            for a in alerts
        ],
        "retrains": [
            {k: r.get(k) for k in ("outcome", "reason", "challenger", "champion_after")} for r in retrains
        ],
        "quarantined_by_reason": scoring["quarantined_by_reason"],
        "deployments": deployed["deployments"],
        "stack": up,
        "tables": {
            "demo summary": summary,
            "quarantined by reason": scoring["quarantined_by_reason"],
            **{f"promotion v{p['replaced']} -> v{p['challenger']} (deltas)": p["deltas"] for p in promotions},
        },
        "urls": {
            "mlflow": settings.tracking_uri,
            "prefect": settings.prefect_api_url.removesuffix("/api"),
            "kafka": settings.kafka_bootstrap,
        },
    }


def demo_clock(now_ms: int) -> int:
    """Where the demo's simulated timeline ends: now, except in the UTC night (00:00-06:00), when it
    ends at 23:59 the day before. The generator's fraud prefers the night until its drift, so a
    timeline ending in the night put the drifted events on hours the first champions had seen fraud
    at, and the demo's second retrain was (rightly) refused by the label-consistency gate.

    >>> demo_clock(86_400_000 * 3 + 3_600_000 * 14) == 86_400_000 * 3 + 3_600_000 * 14  # 14:00: now
    True
    >>> demo_clock(86_400_000 * 3 + 3_600_000 * 2) == 86_400_000 * 3 - 60_000  # 02:00: 23:59 the day before
    True
    """
    into_day = now_ms % 86_400_000
    return now_ms if into_day >= 6 * 3_600_000 else now_ms - into_day - 60_000
