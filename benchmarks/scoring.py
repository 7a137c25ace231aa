"""Scoring benchmark: one run, one broker, JSON on stdout.

(a) raw kafka-python consume -> produce throughput: a Python loop doing nothing but Kafka I/O with the
    pure-Python client (the issue's reference); the same loop with librdkafka (confluent-kafka, what
    rtml's data path uses) is printed next to it
(b) a naive loop: consume one event, parse, featurise, predict, produce -- per event
(c) rtml scoring throughput (Spark job), steady state: wall clock from the end of the JVM's warm-up
    micro-batches (--warmup-batches, JIT compilation) to the end of the last; the rate after only the
    first micro-batch is printed too
(d) produce -> scored latency p50/p99 at a fixed input rate (producer in its own process), steady
    state after a warm-up of traffic; the warm-up's own figures are printed too. The traffic starts
    once the job has read what the topic held (it idles)
(x) the cost of explanations: (c) four times over the same backlog, each with its own checkpoint and
    sink, with scoring.explain_top_k 0, k, k, 0 (--explain-top-k, default 3); means off and on
(s) the cost of one shadow model: (c) four times the same way, without, with, with, without @shadow
(p) the peer: the same job written for Quix Streams (benchmarks/peer_quix.py, its own virtualenv, see
    benchmarks/peer.py) over the same backlog: steady events/s after the events of (c)'s warm-up
    micro-batches, CPU, peak RSS, its scores checked equal to (c)'s on the same event ids; with (d),
    its latency at the same rate the same way. Runs (c) too. Every run prints rtml's ratio to it.
(w) who writes the Delta files in local mode: (c) four times the same way (after one unmeasured warm-up
    run) with spark.sink_writes driver, executors, executors, driver; "cost" is the executors' cost

    python benchmarks/scoring.py [--events 400000] [--naive-events 3000] [--rate 2000] [--seconds 60]
                                 [--warmup 30] [--batch <spark.max_events_per_trigger>] [--warmup-batches 2]
                                 [--phases a,b,c,d,x,s,p,w] [--explain-top-k 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peer import TreeRss, compare_scores, peer_latency, peer_throughput  # noqa: E402  (benchmarks/)

from rtml.features.featurise import featurise_history, model_frame  # noqa: E402
from rtml.flows.bootstrap import bootstrap  # noqa: E402
from rtml.infra.app import stack  # noqa: E402
from rtml.infra.config.kafka_clients import connection_options, ensure_topics, make_consumer, make_producer  # noqa: E402
from rtml.infra.config.settings import Settings, load_settings  # noqa: E402
from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.models.lifecycle.registry import alias_version, load_model  # noqa: E402
from rtml.pipelines.producer import generated_frames, stream_frames  # noqa: E402
from rtml.pipelines.score_job import progress_key, run_scoring  # noqa: E402
from rtml.pipelines.tables import read_table  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_passthrough(settings: Settings, n: int) -> dict:
    """(a) consume n events and produce each to another topic, as fast as kafka-python goes."""
    opts = connection_options(settings)
    ensure_topics(opts, ["bench.raw.out"], settings.kafka.partitions)
    consumer = make_consumer(
        opts,
        settings.kafka.topics.events,
        group_id=f"bench-raw-{time.time()}",
        max_poll_records=10_000,
        fetch_max_bytes=64 << 20,
    )
    producer = make_producer(opts)
    done = 0
    t0 = None
    while done < n:
        for recs in consumer.poll(timeout_ms=500).values():
            t0 = t0 or time.monotonic()
            for r in recs:
                producer.send("bench.raw.out", key=r.key, value=r.value)
            done += len(recs)
    producer.flush()
    secs = time.monotonic() - (t0 or time.monotonic())
    consumer.close()
    producer.close()
    return {"events": done, "seconds": round(secs, 3), "events_per_s": round(done / secs, 1)}


def raw_passthrough_librdkafka(settings: Settings, n: int) -> dict:
    """(a) with librdkafka: consume n events, produce each to another topic, as fast as it goes."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from rtml.pipelines.librdkafka import consumer_config, producer_config

    opts = connection_options(settings)
    ensure_topics(opts, ["bench.raw.out2"], settings.kafka.partitions)
    consumer = Consumer(consumer_config(opts))
    topic = settings.kafka.topics.events
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.kafka.partitions)])
    producer = Producer(producer_config(opts))
    done = 0
    t0 = None
    while done < n:
        msgs = consumer.consume(num_messages=10_000, timeout=0.5)
        t0 = t0 or (time.monotonic() if msgs else None)
        for m in msgs:
            while True:
                try:
                    producer.produce("bench.raw.out2", value=m.value(), key=m.key())
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
        done += len(msgs)
    producer.flush(60)
    secs = time.monotonic() - (t0 or time.monotonic())
    consumer.close()
    return {"events": done, "seconds": round(secs, 3), "events_per_s": round(done / secs, 1)}


def naive_loop(settings: Settings, n: int) -> dict:
    """(b) one event at a time: json.loads -> 1-row frame -> features -> predict -> produce."""
    spec = load_spec()
    model = load_model(settings.tracking_uri, settings.mlflow.model_name, alias_version(settings))
    opts = connection_options(settings)
    consumer = make_consumer(
        opts, settings.kafka.topics.events, group_id=f"bench-naive-{time.time()}", max_poll_records=1
    )
    producer = make_producer(opts)
    done = 0
    t0 = None
    while done < n:
        for recs in consumer.poll(timeout_ms=500, max_records=1).values():
            t0 = t0 or time.monotonic()
            for r in recs:
                frame = pd.DataFrame([json.loads(r.value)])
                feats = featurise_history(frame, spec)
                score = float(model.learner.score(model_frame(feats, spec)[model.columns])[0])
                producer.send(
                    settings.kafka.topics.scores, key=r.key, value=json.dumps({"score": score}).encode()
                )
                done += 1
    producer.flush()
    secs = time.monotonic() - (t0 or time.monotonic())
    consumer.close()
    producer.close()
    return {
        "events": done,
        "seconds": round(secs, 3),
        "events_per_s": round(done / secs, 1),
        "note": "per-event featurise has no cross-event state (it would be slower still)",
    }


def rtml_throughput(settings: Settings, n: int, warmup_batches: int) -> dict:
    """(c) the Spark scoring job over n events already in the topic."""
    spec = load_spec()
    t0 = time.monotonic()
    summary = run_scoring(settings, spec, available_now=True)
    wall = time.monotonic() - t0
    stats = sorted(
        (json.loads(p.read_text()) for p in (settings.sink_root / "_batches").glob("*.json")),
        key=lambda b: b["batch_id"],
    )
    if len(stats) < warmup_batches + 2:
        raise SystemExit(
            f"(c) needs at least {warmup_batches + 2} micro-batches: --events {n} fits in {len(stats)}"
        )

    def rate_after(k: int) -> float:
        # wall clock from the end of micro-batch k-1 to the end of the last one: Spark's own planning
        # and offset/commit logging between micro-batches included
        secs = (stats[-1]["ended_at_ms"] - stats[k - 1]["ended_at_ms"]) / 1000
        return round(sum(b["read"] for b in stats[k:]) / secs, 1)

    steady = stats[warmup_batches:]
    return {
        "events": summary["read"],
        "batches": len(stats),
        "warmup_batches": warmup_batches,
        "wall_seconds_incl_startup": round(wall, 2),
        "steady_events_per_s": rate_after(warmup_batches),
        "after_first_batch_events_per_s": rate_after(1),
        "wall_events_per_s": round(summary["read"] / wall, 1),
        "batch_seconds": [round(b["seconds"], 2) for b in stats],
        "mean_steady_foreach_batch_seconds": round(sum(b["seconds"] for b in steady) / len(steady), 3),
        "steady_phases_ms": {  # medians of rtml's phases in foreachBatch (see the batch records)
            k: round(float(np.median([b["phases"][k] for b in steady])) * 1000, 1)
            for k in steady[0]["phases"]
        },
    }


def _fresh(overrides: dict, name: str, **extra: dict) -> Settings:
    """Settings with their own checkpoint and sink (the same backlog read again from offset 0)."""
    root = Path(overrides["state_dir"]) / name
    spark = {
        **overrides.get("spark", {}),
        "checkpoint_root": str(root / "cp"),
        "sink_root": str(root / "sink"),
    }
    return load_settings(use_default_file=False, overrides={**overrides, "spark": spark, **extra})


def _ab(runs: list[dict], key: str, on_value: object) -> dict:
    off = float(np.mean([r["steady_events_per_s"] for r in runs if r[key] != on_value]))
    on = float(np.mean([r["steady_events_per_s"] for r in runs if r[key] == on_value]))
    return {
        "runs": runs,
        "off_steady_events_per_s": round(off, 1),
        "on_steady_events_per_s": round(on, 1),
        "cost": round(1 - on / off, 4),
    }


def explain_ab(overrides: dict, args: argparse.Namespace) -> dict:
    """(x) (c) with explanations off and on, alternating over the same backlog (fresh state each run)."""
    k, runs = args.explain_top_k, []
    for i, top_k in enumerate((0, k, k, 0)):
        s = _fresh(overrides, f"explain-ab-{i}", scoring={"explain_top_k": top_k})
        c = rtml_throughput(s, args.events, args.warmup_batches)
        runs.append({"explain_top_k": top_k, **{key: c[key] for key in ("steady_events_per_s", "batches")}})
        runs[-1]["mean_steady_foreach_batch_seconds"] = c["mean_steady_foreach_batch_seconds"]
    return _ab(runs, "explain_top_k", k)


def shadow_ab(settings: Settings, overrides: dict, args: argparse.Namespace) -> dict:
    """(s) (c) without and with a shadow model (@shadow: a second version scored in the same pass),
    alternating over the same backlog (fresh state each run), after one unmeasured warm-up run."""
    from rtml.models.lifecycle.registry import log_and_register
    from rtml.models.lifecycle.shadow import clear_shadow, set_shadow
    from rtml.models.training.bootstrap import train_initial
    from rtml.pipelines.history import history_frame

    spec = load_spec()
    learner, metrics, X, _ = train_initial(spec, history_frame(spec, 10_000, 17, None), seed=17)
    other = log_and_register(settings, learner, X, params={}, metrics=metrics, tags={}, run_name="shadow")
    clear_shadow(settings, "benchmark")
    rtml_throughput(_fresh(overrides, "shadow-ab-warmup"), args.events, args.warmup_batches)  # JVM warm
    runs = []
    for i, on in enumerate((False, True, True, False)):
        if on:
            set_shadow(settings, spec, other.version, "benchmark")
        else:
            clear_shadow(settings, "benchmark")
        c = rtml_throughput(_fresh(overrides, f"shadow-ab-{i}"), args.events, args.warmup_batches)
        runs.append({"shadow": on, **{key: c[key] for key in ("steady_events_per_s", "batches")}})
        runs[-1]["mean_steady_foreach_batch_seconds"] = c["mean_steady_foreach_batch_seconds"]
    clear_shadow(settings, "benchmark")
    return _ab(runs, "shadow", True)


def sink_writes_ab(overrides: dict, args: argparse.Namespace) -> dict:
    """(w) (c) with the driver and with the tasks writing the Delta files (local mode, fresh state)."""
    rtml_throughput(_fresh(overrides, "writes-ab-warmup"), args.events, args.warmup_batches)  # JVM warm
    runs = []
    for i, mode in enumerate(("driver", "executors", "executors", "driver")):
        spark = {**overrides.get("spark", {}), "sink_writes": mode}
        s = _fresh({**overrides, "spark": spark}, f"writes-ab-{i}")
        c = rtml_throughput(s, args.events, args.warmup_batches)
        records = [json.loads(p.read_text()) for p in (s.sink_root / "_batches").glob("*.json")]
        runs.append({"sink_writes": mode, **{key: c[key] for key in ("steady_events_per_s", "batches")}})
        runs[-1]["mean_steady_foreach_batch_seconds"] = c["mean_steady_foreach_batch_seconds"]
        runs[-1]["driver_rows_max"] = max(b["driver_rows_max"] for b in records)
    return _ab(runs, "sink_writes", "executors")


def _produce_at_rate(overrides: dict, n: int, rate: float, seed: int) -> None:
    """Producer process: events reach the broker from outside the job's process, as in production."""
    settings = load_settings(use_default_file=False, overrides=overrides)
    spec = load_spec()
    stream_frames(settings, spec, generated_frames(spec, n, seed, None, max(100, int(rate / 10))), rate=rate)


def latency_at_rate(settings: Settings, overrides: dict, rate: float, seconds: float, warmup: float) -> dict:
    """(d) continuous job, events produced at a fixed rate by another process.

    Latency = scored_at - Kafka timestamp of the event. The job first reads what the topic already
    holds (the events produced for (c), unless (c) read them on this checkpoint); the traffic starts
    once Spark reports an idle trigger, so no measured event waits behind that backlog. The first
    ``warmup`` seconds of traffic are reported apart from the steady state.
    """
    import multiprocessing as mp

    spec = load_spec()
    stop = threading.Event()
    progress: list[dict] = []
    runner = threading.Thread(
        target=run_scoring, args=(settings, spec), kwargs={"stop": stop, "on_batch": progress.append}
    )
    runner.start()
    t0 = time.monotonic()
    # Spark reports an idle trigger at once at start, else >= 10 s after the last micro-batch
    while not any(_idle(p) for p in progress):
        if not runner.is_alive():
            raise RuntimeError("(d): the scoring job stopped before it was idle (its error is above)")
        if time.monotonic() - t0 > 900:
            stop.set()
            runner.join(timeout=120)
            raise RuntimeError("(d): the scoring job did not read the topic's backlog within 900 s")
        time.sleep(0.5)
    caught_up_s = time.monotonic() - t0
    t_start_ms = int(time.time() * 1000)
    n = int(rate * (warmup + seconds))
    producer = mp.get_context("spawn").Process(target=_produce_at_rate, args=(overrides, n, rate, 77))
    producer.start()
    producer.join()
    deadline = time.monotonic() + 60
    recent = pd.DataFrame()
    while time.monotonic() < deadline:
        scores = read_table(settings, "scores", columns=["kafka_timestamp_ms", "latency_ms"])
        recent = scores[scores["kafka_timestamp_ms"] >= t_start_ms]
        if len(recent) >= n:
            break
        time.sleep(0.5)
    stop.set()
    runner.join()
    steady_from = t_start_ms + warmup * 1000
    cold = recent.loc[recent["kafka_timestamp_ms"] < steady_from, "latency_ms"].to_numpy()
    lat = recent.loc[recent["kafka_timestamp_ms"] >= steady_from, "latency_ms"].to_numpy()
    return {
        "rate_events_per_s": rate,
        "backlog_read_seconds": round(caught_up_s, 1),  # start-up, the backlog, Spark's idle report
        "warmup_seconds": warmup,
        "events": int(len(lat)),
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "latency_ms_max": float(lat.max()),
        "warmup_events": int(len(cold)),
        "warmup_latency_ms_p50": float(np.percentile(cold, 50)) if len(cold) else None,
        "warmup_latency_ms_p99": float(np.percentile(cold, 99)) if len(cold) else None,
        "per_batch_ms": batch_breakdown(settings, progress, steady_from),
    }


def _idle(progress: dict) -> bool:
    """A progress record of a trigger that ran no micro-batch (found nothing to read)."""
    return not progress_key(progress)[1]


def batch_breakdown(settings: Settings, progress: list[dict], since_ms: float) -> dict:
    """Where a steady micro-batch goes, medians in ms: Spark's durations and rtml's phases."""
    steady = [
        p
        for p in progress
        if p.get("numInputRows") and pd.Timestamp(p["timestamp"]).value // 10**6 >= since_ms
    ]
    spark = pd.DataFrame([p["durationMs"] for p in steady])
    ids = {p["batchId"] for p in steady}
    records = [json.loads(f.read_text()) for f in sorted((settings.sink_root / "_batches").glob("*.json"))]
    ours = pd.DataFrame(
        [{"rtml_seconds": r["seconds"], **r["phases"]} for r in records if r["batch_id"] in ids]
    )
    out = {f"spark_{k}": float(v) for k, v in spark.median().items()} if len(spark) else {}
    out |= (
        {
            f"rtml_{k}" if k != "rtml_seconds" else "rtml_total": round(float(v) * 1000, 1)
            for k, v in ours.median().items()
        }
        if len(ours)
        else {}
    )
    out["batches"] = len(steady)
    out["events_per_batch"] = float(np.median([p["numInputRows"] for p in steady])) if steady else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--naive-events", type=int, default=3_000)
    ap.add_argument("--rate", type=float, default=2_000)
    ap.add_argument("--seconds", type=float, default=60, help="measured steady traffic, after the warm-up")
    ap.add_argument("--warmup", type=float, default=30, help="seconds of traffic before measuring latency")
    ap.add_argument("--batch", type=int, default=None, help="max events per micro-batch (default: setting)")
    ap.add_argument("--warmup-batches", type=int, default=2, help="(c): micro-batches of JVM warm-up")
    ap.add_argument("--phases", default="a,b,c,d,p", help="which measurements to run, e.g. 'c' or 'a,c,x'")
    ap.add_argument("--explain-top-k", type=int, default=3, help="(x): explanations on = this top k")
    ap.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark conf (repeatable)"
    )
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="rtml-bench-"))
    overrides = {
        "state_dir": str(state),
        "ports": {"kafka": _free_port(), "mlflow": _free_port(), "prefect": _free_port()},
    }
    if any("=" not in c for c in args.conf):
        ap.error("--conf takes KEY=VALUE, e.g. --conf spark.eventLog.enabled=true")
    spark: dict = {"conf": dict(c.split("=", 1) for c in args.conf)} if args.conf else {}
    if args.batch:
        spark["max_events_per_trigger"] = args.batch
    if spark:
        overrides["spark"] = spark
    settings = load_settings(use_default_file=False, overrides=overrides)
    stack.up(settings)
    phases = set(args.phases.split(","))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links: stdout is the JSON only
            result = _run(settings, overrides, args, phases)
        print(json.dumps(result, indent=2))
    finally:
        stack.down(settings)
        shutil.rmtree(state, ignore_errors=True)  # ≈65 MB of broker-fed tables and checkpoints per run


def _run(settings: Settings, overrides: dict, args: argparse.Namespace, phases: set[str]) -> dict:
    spec = load_spec()
    ensure_topics(connection_options(settings), settings.kafka.topics.all(), settings.kafka.partitions)
    bootstrap(settings, spec, n=30_000)
    produced = stream_frames(settings, spec, generated_frames(spec, args.events, 5, None, 5000))
    result: dict = {
        "machine": {"cores": os.cpu_count()},
        "max_events_per_trigger": settings.spark.max_events_per_trigger,
        "kafka_io_client": settings.kafka.io_client,
        "produced": {"events": produced["events"], "events_per_s": produced["events_per_s"]},
    }
    if "a" in phases:
        result["a_raw_kafka_python"] = raw_passthrough(settings, args.events)
        result["a_raw_librdkafka"] = raw_passthrough_librdkafka(settings, args.events)
    if "b" in phases:
        result["b_naive_per_event"] = naive_loop(settings, args.naive_events)
    if phases & {"c", "p"}:  # the peer's scores are checked against (c)'s
        with TreeRss(os.getpid()) as rss:  # driver, JVM, Python workers: the job's process tree
            result["c_rtml"] = rtml_throughput(settings, args.events, args.warmup_batches)
        result["c_rtml"]["process_tree"] = rss.report()
    if "p" in phases:
        result["p_peer"] = _peer(settings, args, Path(overrides["state_dir"]))
    if "x" in phases:
        result["x_explanations"] = explain_ab(overrides, args)
    if "s" in phases:
        result["s_shadow"] = shadow_ab(settings, overrides, args)
    if "w" in phases:
        result["w_sink_writes"] = sink_writes_ab(overrides, args)
    if "d" in phases:
        result["d_latency"] = latency_at_rate(settings, overrides, args.rate, args.seconds, args.warmup)
        if "p" in phases:
            n = int(args.rate * (args.warmup + args.seconds))
            result["p_peer"]["latency"] = peer_latency(
                settings,
                load_spec(),
                Path(overrides["state_dir"]),
                _rate_producer(overrides, args.rate, 78),
                n,
                args.warmup,
            )
    if {"a", "b", "c"} <= phases:
        a, b, c = (
            result["a_raw_kafka_python"]["events_per_s"],
            result["b_naive_per_event"]["events_per_s"],
            result["c_rtml"]["steady_events_per_s"],
        )
        a2 = result["a_raw_librdkafka"]["events_per_s"]
        result["ratios"] = {
            "c_over_a": round(c / a, 3),
            "c_over_b": round(c / b, 1),
            "c_over_a_librdkafka": round(c / a2, 3),
        }
    if "p" in phases:
        result["ratios_to_peer"] = _peer_ratios(result)
    return result


def _peer(settings: Settings, args: argparse.Namespace, work: Path) -> dict:
    """(p) the peer over (c)'s backlog; its scores against (c)'s."""
    spec = load_spec()
    warm = min(args.warmup_batches * settings.spark.max_events_per_trigger, args.events // 2)
    out, peer_out = peer_throughput(settings, spec, args.events, warm, work)
    threshold = load_model(
        settings.tracking_uri, settings.mlflow.model_name, out["model_version"]
    ).learner.threshold
    out["scores_vs_rtml"] = compare_scores(settings, spec, peer_out, threshold)
    return out


def _rate_producer(overrides: dict, rate: float, seed: int) -> object:
    """produce(n): n events at ``rate`` from another process, as (d) sends them."""
    import multiprocessing as mp

    def produce(n: int) -> None:
        proc = mp.get_context("spawn").Process(target=_produce_at_rate, args=(overrides, n, rate, seed))
        proc.start()
        proc.join()

    return produce


def _peer_ratios(result: dict) -> dict:
    """rtml / peer: throughput (higher is better for rtml), latency (lower is), peak RSS (lower is)."""
    c, p = result["c_rtml"], result["p_peer"]
    out = {
        "rtml_steady_events_per_s": c["steady_events_per_s"],
        "peer_steady_events_per_s": p["steady_events_per_s"],
        "throughput_rtml_over_peer": round(c["steady_events_per_s"] / p["steady_events_per_s"], 3),
        "rtml_process_tree_peak_rss_mb": c["process_tree"]["peak_rss_mb"],
        "peer_peak_rss_mb": p["peak_rss_mb"],
        "rtml_process_tree_peak_pss_mb": c["process_tree"]["peak_pss_mb"],
        "peer_peak_pss_mb": p.get("peak_pss_mb"),
        "scores_max_abs_diff": p["scores_vs_rtml"]["max_abs_diff"],
    }
    if "d_latency" in result and "latency" in p:
        d, q = result["d_latency"], p["latency"]
        for k in ("p50", "p99"):
            out[f"latency_{k}_ms_rtml"] = d[f"latency_ms_{k}"]
            out[f"latency_{k}_ms_peer"] = q[f"latency_ms_{k}"]
            out[f"latency_{k}_rtml_over_peer"] = round(d[f"latency_ms_{k}"] / q[f"latency_ms_{k}"], 2)
    return out


if __name__ == "__main__":
    main()
