"""State scale benchmark: the scoring job's per-micro-batch cost and memory as entity state grows. JSON.

For each size (number of cards; the history is ``--per-card`` events per card spread over 24 h of
event time, so 10x the cards is also 10x the history rows in state):

(spark) the real path, as ``benchmarks/scoring.py`` (c) runs it: the embedded broker, the Spark
    scoring query (validate -> per-entity state -> champion -> Delta sinks). A 24 h backlog is
    produced and scored first in large micro-batches (``--fill-batch``), filling the state; then
    ``--warmup-batches`` + ``--measured`` micro-batches of ``--batch`` events that follow it in
    event time are produced and scored by a second run of the query from the same checkpoint (the
    warm-up ones, with the JVM and the Python workers cold, are not counted). Reported per size: the
    state (history rows the aggregates keep, computed from the produced events with
    :func:`retained`; Spark's state operator metrics: rows = buckets, memory and RocksDB bytes; the
    checkpoint's state directory on disk), the median batch time (Spark's ``triggerExecution`` and
    the foreachBatch seconds), the state operator's own time (``allUpdatesTimeMs`` (the Python state
    function, which features and scores too) + ``commitTimeMs``) and its share of the batch, and the
    peak RSS of the scoring process tree (driver, JVM, Python workers), sampled from /proc.
(micro) the Python state function alone on one bucket (no Spark): state decoded, a batch's share of
    events featurised against it, the history trimmed and encoded again; median of ``--repeat`` (wall
    and CPU time: the CPU time is the steadier figure on a shared machine).

The ratios (largest size / smallest) are printed for both. ``--rounds N`` (spark) measures every
size N times, the sizes one after another in each round (each round's events follow the last's in
event time, from the same checkpoint), and prints the median of the per-round ratios beside each
round's: on a shared machine, a load that comes and goes lands on one round, not on one size.

    python benchmarks/state_scale.py [--cards 50000,500000] [--per-card 4] [--batch 20000]
                                     [--measured 5] [--warmup-batches 3] [--fill-batch 200000]
                                     [--buckets N] [--phases micro,spark] [--baseline REV]
                                     [--stores spark,sqlite,postgres] [--rounds 1]

``--baseline REV`` (micro) times the state function of git revision REV too, in the same run (only
``pipelines/entity_state.py`` and ``features/featurise.py`` are taken from REV; any other rtml module
they import is today's). For the
spark phase, run the script twice with PYTHONPATH pointing at each revision's code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.features.featurise import EVENT_MS, retained  # noqa: E402
from rtml.infra.config.settings import load_settings  # noqa: E402
from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.pipelines.generator import CardTransactionGenerator, to_event_frame  # noqa: E402

DAY_MS = 86_400_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _generator(cards: int, per_card: int, extra: int, seed: int) -> CardTransactionGenerator:
    """Cards x per_card events over 24 h of event time, then ``extra`` more at the same rate,
    ending about now (events in the future would be quarantined)."""
    history = cards * per_card
    rate = history / (DAY_MS / 1000)  # events per simulated second
    start = int(time.time() * 1000) - int((history + extra) / rate * 1000) - 60_000
    return CardTransactionGenerator(seed=seed, n_cards=cards, events_per_sim_second=rate, start_ms=start)


# ---------------------------------------------------------------------------------------------- micro


class _State:
    def __init__(self, blob: bytes) -> None:
        self.exists, self.get, self.updated = True, (blob,), None

    def update(self, value: tuple) -> None:
        self.updated = value


def baseline_module(rev: str):  # noqa: ANN201
    """``pipelines/entity_state.py`` as it was at git revision ``rev`` (with that revision's
    ``features/featurise.py``), importable beside today's: the before of the same run."""
    import importlib
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    tag = "".join(c if c.isalnum() else "_" for c in rev)
    d = Path(tempfile.mkdtemp(prefix="rtml-state-base-"))
    for src, name in (("features/featurise.py", "featurise"), ("pipelines/entity_state.py", "entity_state")):
        text = subprocess.run(
            ["git", "-C", str(repo), "show", f"{rev}:{src}"], check=True, capture_output=True, text=True
        ).stdout
        text = text.replace("from rtml.features.featurise import", f"from base_{tag}_featurise import")
        (d / f"base_{tag}_{name}.py").write_text(text)
    sys.path.insert(0, str(d))
    return importlib.import_module(f"base_{tag}_entity_state")


def micro(cards: int, per_card: int, batch: int, buckets: int, repeat: int, es=None) -> dict:  # noqa: ANN001
    """The state function of one bucket: its 1/buckets of the cards' 24 h history and of a batch
    (``es``: the entity_state module to time, default today's)."""
    from rtml.features.featurise import event_ms_from_field

    if es is None:
        from rtml.pipelines import entity_state as es

    spec = load_spec()
    settings = load_settings(use_default_file=False, overrides={"state_dir": tempfile.mkdtemp()})
    gen = _generator(cards, per_card, batch, seed=11)
    frames = []
    for n in (cards * per_card, batch):
        f = gen.batch(n)
        f = f[f["card_id"].str[5:].astype(int) % buckets == 0].reset_index(drop=True)
        f = to_event_frame(f, spec)
        f[EVENT_MS] = event_ms_from_field(f[spec.event_time], spec)
        frames.append(f)
    hist_events, new = frames
    sc = settings.scoring
    fn = es.make_state_fn(spec, None, lambda f: f, sc.dedup_horizon_seconds, sc.state_idle_ttl_seconds)
    # the bucket's state as the job leaves it after the backlog
    st = _State(b"")
    st.exists = False
    for _ in fn((0,), iter([hist_events.copy()]), st):
        pass
    blob = st.updated[0]
    times, cpu = [], []
    for _ in range(repeat):
        s = _State(blob)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in fn((0,), iter([new.copy()]), s):
            pass
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "cards": cards,
        "bucket_history_rows": len(es._from_bytes(blob)),
        "bucket_state_bytes": len(blob),
        "bucket_batch_rows": len(new),
        "state_fn_ms_median": round(statistics.median(times) * 1000, 1),
        "state_fn_cpu_ms_median": round(statistics.median(cpu) * 1000, 1),  # robust to a loaded machine
    }


# ---------------------------------------------------------------------------------------------- spark


def _tree_rss_kb(root: int) -> int:
    """RSS of ``root`` and all its descendants (from /proc), in kB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def _score_child(overrides: dict, out: str) -> None:
    """Child process: one availableNow run of the scoring job; Spark's progress records to ``out``."""
    from rtml.pipelines.score_job import run_scoring

    settings = load_settings(use_default_file=False, overrides=overrides)
    progress: list[dict] = []
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_scoring(settings, load_spec(), available_now=True, on_batch=progress.append)
    Path(out).write_text(json.dumps({"summary": summary, "progress": progress}, default=str))


def _run_scoring_measured(overrides: dict, workdir: Path, name: str) -> dict:
    """Run the job in its own process; peak RSS of its process tree sampled every 0.2 s."""
    out = workdir / f"{name}.json"
    proc = mp.get_context("spawn").Process(target=_score_child, args=(overrides, str(out)))
    peak = 0
    t0 = time.monotonic()
    proc.start()
    while proc.is_alive():
        peak = max(peak, _tree_rss_kb(proc.pid))
        time.sleep(0.2)
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"scoring run {name} failed (exit {proc.exitcode})")
    result = json.loads(out.read_text())
    result["peak_rss_mb"] = round(peak / 1024, 1)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def _dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


class SizeRun:
    """One size's topic and checkpoint: :meth:`fill` scores its 24 h backlog once; each
    :meth:`measure` (one per round) produces the next ``(warm-up + measured) x batch`` events, which
    follow the earlier ones in event time, and scores them from the same checkpoint."""

    def __init__(
        self, base: dict, workdir: Path, cards: int, args: argparse.Namespace, seed: int, store: str
    ) -> None:
        from rtml.infra.config.kafka_clients import connection_options, ensure_topics

        self.cards, self.store, self.args = cards, store, args
        self.root = workdir / f"cards-{cards}-{store}"
        self.overrides = {
            **base,
            "kafka": {"topics": {"events": f"bench.state.{cards}.{store}"}},
            "scoring": {**base.get("scoring", {}), "state_store": store},
            "spark": {
                **base.get("spark", {}),
                "checkpoint_root": str(self.root / "cp"),
                "sink_root": str(self.root / "sink"),
            },
        }
        self.settings = load_settings(use_default_file=False, overrides=self.overrides)
        events = self.settings.kafka.topics.events
        ensure_topics(connection_options(self.settings), [events], self.settings.kafka.partitions)
        self.measured_events = (args.measured + args.warmup_batches) * args.batch
        self.gen = _generator(cards, args.per_card, self.measured_events * args.rounds, seed)
        self.keys: list[pd.DataFrame] = []
        self.fill_result: dict = {}

    def _produce(self, n: int) -> dict:
        from rtml.pipelines.producer import stream_frames

        def frames():  # noqa: ANN202
            done = 0
            while done < n:
                f = self.gen.batch(min(100_000, n - done))
                self.keys.append(f[["card_id", "event_time_ms"]].rename(columns={"event_time_ms": EVENT_MS}))
                done += len(f)
                yield f

        return stream_frames(self.settings, load_spec(), frames())

    def _score(self, name: str, batch: int) -> dict:
        """One availableNow run of the job from this size's checkpoint, ``batch`` events per trigger."""
        spark = {**self.overrides["spark"], "max_events_per_trigger": batch}
        return _run_scoring_measured({**self.overrides, "spark": spark}, self.root, name)

    def fill(self) -> None:
        produced = self._produce(self.cards * self.args.per_card)
        run = self._score("fill", self.args.fill_batch)
        self.fill_result = {"produced_events_per_s": produced["events_per_s"], "run": run}

    def measure(self, round_: int) -> dict:
        args, settings = self.args, self.settings
        self._produce(self.measured_events)
        meas = self._score(f"measured-{round_}", args.batch)
        events = pd.concat(self.keys, ignore_index=True)
        window = max(DAY_MS, settings.scoring.dedup_horizon_seconds * 1000)
        state_rows = len(retained(events, "card_id", window))
        prog = [p for p in meas["progress"] if p.get("numInputRows")][args.warmup_batches :]  # cold ones out
        last_batch = max(p["batchId"] for p in meas["progress"])
        stats = sorted(
            (json.loads(p.read_text()) for p in (settings.sink_root / "_batches").glob("*.json")),
            key=lambda b: b["batch_id"],
        )
        stats = [b for b in stats if b["batch_id"] > last_batch - len(prog)]
        ops = [p["stateOperators"][0] for p in prog if p.get("stateOperators")]  # none: keyed stores
        trig = [p["durationMs"]["triggerExecution"] / 1000 for p in prog]
        upd = [o["allUpdatesTimeMs"] / 1000 for o in ops]
        com = [o["commitTimeMs"] / 1000 for o in ops]
        last_op = ops[-1] if ops else {}
        fill = self.fill_result["run"]
        return {
            "cards": self.cards,
            "state_store": self.store,
            "round": round_,
            "produced_events_per_s": self.fill_result["produced_events_per_s"],
            "history_events": self.cards * args.per_card,
            "state_history_rows": state_rows,
            "state_operator": {
                k: last_op.get(k) for k in ("numRowsTotal", "memoryUsedBytes", "numRowsUpdated")
            }
            | {k: v for k, v in (last_op.get("customMetrics") or {}).items() if "Bytes" in k or "bytes" in k},
            "state_checkpoint_mb": _dir_mb(settings.checkpoint_root / "scoring" / "state")
            + _dir_mb(settings.checkpoint_root / "scoring" / "entity_state"),
            "batch_events": args.batch,
            "measured_batches": len(prog),
            "batch_rows": [p["numInputRows"] for p in prog],
            "batch_s_median": _med(trig),
            "batch_s_all": [round(x, 2) for x in trig],
            "foreach_batch_s_median": _med([b["seconds"] for b in stats]),
            "state_update_s_median": _med(upd),
            "state_commit_s_median": _med(com),
            "state_share_of_batch": _med([(u + c) / t for u, c, t in zip(upd, com, trig, strict=True)])
            if ops
            else None,  # the keyed stores keep their state outside Spark: no state operator
            "peak_rss_mb_measured_run": meas["peak_rss_mb"],
            "peak_rss_mb_fill_run": fill["peak_rss_mb"],
            "fill_run": {"events": fill["summary"]["read"], "wall_s": fill["wall_s"]},
        }


def _med(values: list[float]) -> float:
    return round(float(statistics.median(values)), 3) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cards", default="50000,500000", help="sizes, comma separated (ratio: last/first)")
    ap.add_argument("--per-card", type=int, default=4, help="events per card in the 24 h of history")
    ap.add_argument("--batch", type=int, default=20_000, help="events per measured micro-batch")
    ap.add_argument("--measured", type=int, default=5, help="measured micro-batches")
    ap.add_argument("--warmup-batches", type=int, default=3, help="micro-batches before them, not counted")
    ap.add_argument("--fill-batch", type=int, default=200_000, help="events per micro-batch of the backlog")
    ap.add_argument(
        "--rounds", type=int, default=1, help="(spark) measured runs per size, the sizes interleaved in each"
    )
    ap.add_argument("--buckets", type=int, default=None, help="spark.entity_buckets (default: the store's)")
    ap.add_argument("--repeat", type=int, default=5, help="(micro) repetitions")
    ap.add_argument("--phases", default="micro,spark")
    ap.add_argument(
        "--stores",
        default="spark,sqlite",
        help="(spark) scoring.state_store values to run (spark, sqlite, postgres)",
    )
    ap.add_argument("--baseline", default=None, help="(micro) also time entity_state at this git revision")
    args = ap.parse_args()
    sizes = [int(x) for x in args.cards.split(",")]
    phases = set(args.phases.split(","))
    result: dict = {"machine": {"cores": os.cpu_count()}, "per_card": args.per_card, "batch": args.batch}
    buckets = args.buckets  # None: each store's default (the sqlite store: one per task; Spark's: 8)
    result["entity_buckets"] = buckets or "store default"
    if "micro" in phases:
        variants = {"today": None}
        if args.baseline:
            variants = {f"baseline_{args.baseline}": baseline_module(args.baseline), **variants}
        for label, module in variants.items():  # the sizes interleaved across variants: same load
            runs = [micro(c, args.per_card, args.batch, buckets or 8, args.repeat, module) for c in sizes]
            result[f"micro_{label}"] = {
                "runs": runs,
                "ratio_state_fn": round(runs[-1]["state_fn_ms_median"] / runs[0]["state_fn_ms_median"], 2),
                "ratio_state_fn_cpu": round(
                    runs[-1]["state_fn_cpu_ms_median"] / runs[0]["state_fn_cpu_ms_median"], 2
                ),
            }
    if "spark" in phases:
        result["spark"] = spark_phase(args, sizes, buckets)
    print(json.dumps(result, indent=2))


def spark_phase(args: argparse.Namespace, sizes: list[int], buckets: int) -> dict:
    from rtml.flows.bootstrap import bootstrap
    from rtml.infra.app import stack
    from rtml.infra.config.kafka_clients import connection_options, ensure_topics

    workdir = Path(tempfile.mkdtemp(prefix="rtml-state-scale-"))
    base = {
        "state_dir": str(workdir),
        "ports": {"kafka": _free_port(), "mlflow": _free_port(), "prefect": _free_port()},
        "spark": {"entity_buckets": buckets} if buckets else {},
    }
    settings = load_settings(use_default_file=False, overrides=base)
    stack.up(settings)
    pg = None
    try:
        if "postgres" in args.stores.split(","):  # the postgres store's server, on a free port
            from rtml.infra.app.postgres import start_postgres

            pg = start_postgres(_free_port(), ("rtml_state",))
            url = f"postgresql://postgres:{pg['password']}@127.0.0.1:{pg['port']}/rtml_state"
            base["scoring"] = {"state_url": url}
        with contextlib.redirect_stdout(sys.stderr):
            spec = load_spec()
            topics = settings.kafka.topics.all()
            ensure_topics(connection_options(settings), topics, settings.kafka.partitions)
            bootstrap(settings, spec, n=30_000)
            stores = args.stores.split(",")
            sized = {
                st: [SizeRun(base, workdir, c, args, 31 + i, st) for i, c in enumerate(sizes)]
                for st in stores
            }
            for i in range(len(sizes)):  # the stores interleaved per size: the same machine load
                for st in stores:
                    sized[st][i].fill()
            runs: dict[str, list[list[dict]]] = {st: [] for st in stores}
            for r in range(args.rounds):  # each round measures every size, the stores alternating per size
                for st in stores:
                    runs[st].append([])
                for i in range(len(sizes)):
                    for st in stores:
                        runs[st][-1].append(sized[st][i].measure(r))
                        print(json.dumps(runs[st][-1][-1]), file=sys.stderr)
    finally:
        stack.down(settings)
        if pg is not None:
            from rtml.infra.app.postgres import stop_postgres

            stop_postgres(pg["pid"], pg["base"])
        shutil.rmtree(workdir, ignore_errors=True)  # >1 GB of checkpoints at 500k cards
    return {st: _ratios(r) for st, r in runs.items()}


def _ratios(rounds: list[list[dict]]) -> dict:
    """Per round, the largest size's figures over the smallest's; the median over the rounds."""
    per_round = []
    for runs in rounds:
        first, last = runs[0], runs[-1]
        state_s = [r["state_update_s_median"] + r["state_commit_s_median"] for r in (first, last)]
        per_round.append(
            {
                "batch_s": round(last["batch_s_median"] / first["batch_s_median"], 2),
                "state_s": round(state_s[1] / state_s[0], 2) if state_s[0] == state_s[0] else None,
                "peak_rss": round(last["peak_rss_mb_measured_run"] / first["peak_rss_mb_measured_run"], 2),
            }
        )

    def median(key: str) -> float | None:
        values = [r[key] for r in per_round if r[key] is not None]
        return round(float(statistics.median(values)), 2) if values else None

    return {
        "runs": [run for runs in rounds for run in runs],
        "ratio_batch_s": median("batch_s"),
        "ratio_state_s": median("state_s"),
        "ratio_peak_rss": median("peak_rss"),
        "ratios_per_round": per_round,
    }


if __name__ == "__main__":
    main()
