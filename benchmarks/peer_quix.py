"""The peer of benchmarks/scoring.py phase (p): rtml's scoring job written for Quix Streams.

Runs in its own virtualenv (quixstreams pins confluent-kafka < 2.13, rtml 2.16): it never imports
rtml. Everything it needs comes from the JSON the benchmark exports (``--model``): the stream spec's
validation rules, the per-entity windows, the champion's scaler, coefficients and threshold.

Per message, as a well-written per-message app does it: parse with orjson, validate by the spec (the
same checks and first-failing-reason order as rtml's Spark validation), drop a repeated event id of
the same card within the de-duplication horizon, update the card's trailing (t - w, t] windows
(count and sum, one deque per window and card, plain Python), score the logistic model with the
exported coefficients (plain floats: no scikit-learn or numpy call per event), and send the score (or
the quarantine record) to Kafka. The windows live in process memory (Quix's RocksDB state and its
windowed aggregations, tumbling/hopping/sliding with other edge rules, cannot express the exact
per-event trailing windows rtml computes; a RocksDB read and write per event would also be slower).
For a card's events in event-time order (the generator's streams) the aggregates are rtml's exactly.

    python peer_quix.py --model model.json --broker 127.0.0.1:9092 --group g --mode throughput \
        --events 400000 --warmup-events 100000 --out result.json
    ... --mode latency --out result.json   (runs until SIGTERM; latencies of every scored event)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_WS_COLON = re.compile(rb'"\s+:')


class _NonFinite(ValueError):
    pass


def _reject_constant(token: str) -> float:
    raise _NonFinite(token)


class Validator:
    """rtml's validation (rtml.pipelines.validation) in per-message Python: same checks, same order."""

    def __init__(self, spec: dict) -> None:
        import orjson

        self.loads = orjson.loads
        self.spec = spec
        self.max_bytes = spec["max_event_bytes"]
        # (name, type, required) in rtml's field order: id, time, entity, features
        self.fields = [
            (spec["event_id"], "string", True),
            (spec["event_time"], spec["event_time_type"], True),
            (spec["entity_key"], "string", True),
            *[(f["name"], f["type"], f["required"]) for f in spec["features"]],
        ]
        self.names = {n for n, _, _ in self.fields}
        self.features = spec["features"]
        self.extra_reject = spec["extra_fields"] == "reject"
        self.future_ms = spec["max_future_seconds"] * 1000
        self.mapped = {
            f["name"]: set(f["categories"])
            for f in spec["features"]
            if f["categories"] and f["on_unknown"] == "map"
        }
        # the fast path: every field present with its type, in range, a known category where unknown
        # ones are rejected, nothing else (orjson never yields NaN or infinity); else the ordered checks
        py = {"string": (str,), "boolean": (bool,), "bigint": (int,), "double": (int, float)}
        self.fast = [
            (n, py[t], f["min"], f["max"], set(f["categories"]) if f.get("on_unknown") == "reject" else None)
            for (n, t, _), f in zip(
                self.fields, [{"min": None, "max": None, "categories": []}] * 3 + self.features, strict=True
            )
        ]
        self.n_fields = len(self.fields)
        self.fmt = spec["event_time_format"]

    def _diagnose(self, value: bytes) -> str:
        """Why the strict parser rejected a payload: duplicate key, non-finite number, else unparseable."""
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid_utf8"
        bad: list[str] = []

        def pairs(items: list) -> dict:
            keys = [k for k, _ in items]
            dups = [k for k in keys if keys.count(k) > 1]
            if dups and not bad:
                bad.append(f"duplicate_field:{dups[0]}")
            return dict(items)

        try:
            obj = json.JSONDecoder(object_pairs_hook=pairs).decode(text)
        except ValueError:
            return "unparseable_json"
        if bad:
            return bad[0]
        if isinstance(obj, dict):
            for k, v in obj.items():
                if _has_non_finite(v):
                    return f"non_finite:{k}"
        return "unparseable_json"

    def parse(self, value: bytes | None) -> tuple[dict | None, str | None]:
        if not value:
            return None, "empty_payload"
        if len(value) > self.max_bytes:
            return None, "oversized_payload"
        try:
            ev = self.loads(value)
        except ValueError:
            return None, self._diagnose(value)
        if type(ev) is not dict:
            return None, "not_json_object"
        # orjson keeps the last of duplicate keys: count the keys written, re-parse when unsure
        if value.count(b'":') != len(ev) or _WS_COLON.search(value):
            reason = self._duplicate_key(value)
            if reason:
                return None, reason
        return ev, None

    def _duplicate_key(self, value: bytes) -> str | None:
        reason = self._diagnose(value)
        return reason if reason.startswith("duplicate_field:") else None

    def check(self, ev: dict, kafka_ms: int) -> tuple[int | None, str | None]:
        """(event time in epoch ms, first failing reason or None); maps unknown categories in place."""
        if len(ev) != self.n_fields or not ev.get(self.spec["event_id"]):
            return self._check_ordered(ev, kafka_ms)
        for n, types, lo, hi, cats in self.fast:
            v = ev.get(n)
            if (
                type(v) not in types
                or (lo is not None and v < lo)
                or (hi is not None and v > hi)
                or (cats is not None and v not in cats)
            ):
                return self._check_ordered(ev, kafka_ms)
        t_ms = _event_ms(ev[self.spec["event_time"]], self.fmt)
        if t_ms is None or (kafka_ms > 0 and t_ms > kafka_ms + self.future_ms):
            return self._check_ordered(ev, kafka_ms)
        for n, cats in self.mapped.items():
            if ev[n] not in cats:
                ev[n] = "__unknown__"
        return t_ms, None

    def _check_ordered(self, ev: dict, kafka_ms: int) -> tuple[int | None, str | None]:
        """rtml's checks one after another: the first failing one is the reason."""
        get = ev.get
        for n, t, _ in self.fields:  # present and not null, but of another JSON type
            v = get(n)
            if v is not None and not _type_ok(v, t):
                return None, f"wrong_type:{n}"
        for n, _, required in self.fields:
            if required and get(n) is None:
                return None, f"missing_field:{n}"
        if get(self.spec["event_id"]) == "":
            return None, f"missing_field:{self.spec['event_id']}"
        if self.extra_reject:
            extra = [k for k in ev if k not in self.names]
            if extra:
                return None, "extra_field:" + ",".join(extra)
        for f in self.features:
            v = get(f["name"])
            if v is None:
                continue
            if f["type"] == "double" and not math.isfinite(v):
                return None, f"non_finite:{f['name']}"
            if f["min"] is not None and v < f["min"]:
                return None, f"out_of_range:{f['name']}"
            if f["max"] is not None and v > f["max"]:
                return None, f"out_of_range:{f['name']}"
            if f["categories"] and f["on_unknown"] == "reject" and v not in f["categories"]:
                return None, f"unknown_category:{f['name']}"
        t_ms = _event_ms(get(self.spec["event_time"]), self.spec["event_time_format"])
        if t_ms is None:
            return None, f"bad_event_time:{self.spec['event_time']}"
        if kafka_ms > 0 and t_ms > kafka_ms + self.future_ms:
            return None, f"event_time_in_future:{self.spec['event_time']}"
        for n, cats in self.mapped.items():
            v = get(n)
            if v is not None and v not in cats:
                ev[n] = "__unknown__"
        return t_ms, None


def _has_non_finite(v: object) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, list):
        return any(_has_non_finite(x) for x in v)
    if isinstance(v, dict):
        return any(_has_non_finite(x) for x in v.values())
    return False


def _type_ok(v: object, t: str) -> bool:
    if t == "string":
        return type(v) is str
    if t == "boolean":
        return type(v) is bool
    if t == "bigint":
        return type(v) is int or (type(v) is float and v.is_integer())
    return type(v) is int or type(v) is float  # double


def _event_ms(v: object, fmt: str) -> int | None:
    if fmt == "epoch_ms":
        return int(v)  # type: ignore[arg-type]
    if fmt == "epoch_s":
        return round(float(v) * 1000)  # type: ignore[arg-type]
    try:
        dt = datetime.fromisoformat(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # rtml's Spark session time zone is UTC
    return (dt - _EPOCH) // _MS


class Windows:
    """Per-card trailing windows (t - w, t]: the card's recent events in three lists (time, amount,
    id), a start index and a running sum per window, the ids within the de-duplication horizon in a
    set. Expired events are skipped by moving a start index; the lists are compacted now and then."""

    def __init__(self, spec: dict) -> None:
        self.windows = [w_ms for _, w_ms in spec["windows"]]
        self.sum_of = spec["sum_of"]
        self.horizon = spec["dedup_horizon_ms"]
        self.cards: dict[str, list] = {}

    def seen(self, card: str, event_id: str, t_ms: int) -> bool:
        """Is this id a repeat on this card within the horizon (then it is neither scored nor counted)?"""
        st = self.cards.get(card)
        if st is None or not self.horizon:
            return False
        ts, ids, ids_set = st[0], st[2], st[5]
        h, edge = st[6], t_ms - self.horizon
        while h < len(ts) and ts[h] <= edge:
            ids_set.discard(ids[h])
            h += 1
        st[6] = h
        return event_id in ids_set

    def add(self, card: str, event_id: str, t_ms: int, amount: float) -> list[float]:
        """Append the event, expire what left each window; [count_w, sum_w for each window]."""
        st = self.cards.get(card)
        if st is None:  # times, amounts, ids, window starts, window sums, ids in the horizon, its start
            st = self.cards[card] = [[], [], [], [0] * len(self.windows), [0.0] * len(self.windows), set(), 0]
        ts, amts, starts, sums = st[0], st[1], st[3], st[4]
        ts.append(t_ms)
        amts.append(amount)
        if self.horizon:
            st[2].append(event_id)
            st[5].add(event_id)
        end = len(ts)
        out = []
        for i, w in enumerate(self.windows):
            j, s, edge = starts[i], sums[i] + amount, t_ms - w
            while ts[j] <= edge:
                s -= amts[j]
                j += 1
            if j == end - 1:
                s = amount  # the window holds this event only: no drift of the running sum
            starts[i], sums[i] = j, s
            out.append(float(end - j))
            if self.sum_of:
                out.append(s)
        low = min(*starts, st[6]) if self.horizon else min(starts)
        if low > 64 and low * 2 > end:  # compact: drop what every window and the horizon left behind
            for lst in (ts, amts, st[2]):
                del lst[:low]
            st[3] = [j - low for j in starts]
            st[6] = max(st[6] - low, 0)
        return out


class Model:
    """The champion's SGD logistic regression from exported parameters: scaled numeric inputs, one-hot
    categories (unknown last), p = 1 / (1 + exp(-(x . w + b)))."""

    def __init__(self, m: dict) -> None:
        self.numeric = m["numeric"]
        self.mean = m["mean"]
        self.scale = m["scale"]
        n = len(self.numeric)
        coef = m["coef"]
        self.w_num = coef[:n]
        self.cat_w: list[tuple[str, dict[str, float], float]] = []
        pos = n
        for name, cats in m["categories"].items():
            block = coef[pos : pos + len(cats)]
            self.cat_w.append((name, dict(zip(cats[:-1], block[:-1], strict=True)), block[-1]))
            pos += len(cats)
        self.b = m["intercept"]
        self.threshold = m["threshold"]
        self.version = m["version"]
        self.terms = list(zip(self.mean, self.scale, self.w_num, strict=True))
        # explanations as rtml's linear explainer: w_j (z_j - ref_j) per numeric input, w[code] - w . ref
        # per one-hot block, base b + w . ref (ref: the encoder's mean encoded row)
        ref = m["reference"]
        self.ref_w = [r * w for r, w in zip(ref[:n], self.w_num, strict=True)]
        self.cat_c: list[tuple[str, dict[str, float], float]] = []
        pos = n
        for name, cats in m["categories"].items():
            block, rb = coef[pos : pos + len(cats)], ref[pos : pos + len(cats)]
            off = sum(w * r for w, r in zip(block, rb, strict=True))
            table = {c: w - off for c, w in zip(cats[:-1], block[:-1], strict=True)}
            self.cat_c.append((name, table, block[-1] - off))
            pos += len(cats)
        self.base = self.b + sum(w * r for w, r in zip(coef, ref, strict=True))
        self.inputs = [*self.numeric, *m["categories"]]

    def score(self, x: list[float], ev: dict) -> float:
        z = self.b
        for v, (mu, sd, w) in zip(x, self.terms, strict=True):
            z += (v - mu) / sd * w
        for name, table, unknown in self.cat_w:
            z += table.get(ev.get(name), unknown)
        return 1.0 / (1.0 + math.exp(-z))

    def explain(self, x: list[float], ev: dict, k: int) -> dict:
        """The top ``k`` contributions by magnitude (ties: the earlier input first), the rest and base."""
        c = [(v - mu) / sd * w - rw for v, (mu, sd, w), rw in zip(x, self.terms, self.ref_w, strict=True)]
        c += [table.get(ev.get(name), unknown) for name, table, unknown in self.cat_c]
        top = sorted(range(len(c)), key=lambda j: -abs(c[j]))[:k]
        out: dict = {}
        for i, j in enumerate(top, 1):
            out[f"explain_{i}_feature"] = self.inputs[j]
            out[f"explain_{i}_contribution"] = c[j]
        out["explain_base"] = self.base
        out["explain_rest"] = sum(c) - sum(c[j] for j in top)
        out["explain_output"] = "log_odds"
        return out


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would report the parent's, which it inherits at exec)."""
    with open("/proc/self/status") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return round(kb / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--broker", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--mode", choices=["throughput", "latency"], required=True)
    ap.add_argument("--events", type=int, default=0, help="throughput: stop after this many events")
    ap.add_argument("--warmup-events", type=int, default=0, help="throughput: steady rate after these")
    ap.add_argument("--out", required=True)
    ap.add_argument("--state-dir", default=None)
    ap.add_argument("--ready", default=None, help="file written once the consumer has its partitions")
    args = ap.parse_args()
    marks: dict[str, float] = {"start": time.monotonic()}

    from quixstreams import Application

    with open(args.model) as fh:
        m = json.load(fh)
    spec = m["spec"]
    validator, windows, model = Validator(spec), Windows(spec), Model(m)
    id_f, key_f, time_f = spec["event_id"], spec["entity_key"], spec["event_time"]
    sum_of = spec["sum_of"]
    hour = "hour" in spec["time_features"]
    # model inputs by name: declared numeric features, then event_hour, then the aggregates
    plain = [n for n in model.numeric if n in {f["name"] for f in spec["features"]}]
    assert model.numeric == [*plain, *(["event_hour"] if hour else []), *spec["aggregate_names"]]

    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest" if args.mode == "throughput" else "latest",
        loglevel="WARNING",
        use_changelog_topics=False,
        auto_create_topics=False,
        state_dir=args.state_dir,
        consumer_extra_config={
            "fetch.wait.max.ms": 10,  # caught up: the broker answers a fetch within 10 ms
            "max.partition.fetch.bytes": 8 << 20,
            "fetch.max.bytes": 64 << 20,
        },
        producer_extra_config={"linger.ms": 5, "enable.idempotence": False},
    )
    events = app.topic(spec["events_topic"], value_deserializer="bytes", key_deserializer="bytes")
    scores_t = app.topic(spec["scores_topic"], value_serializer="json", key_serializer="str")
    quarantine_t = app.topic(spec["quarantine_topic"], value_serializer="json", key_serializer="str")

    stats = {"read": 0, "scored": 0, "quarantined": 0, "duplicates": 0}
    ids: list[str] = []
    scores: list[float] = []
    lat: list[tuple[int, int]] = []
    keep_scores = args.mode == "throughput"
    top_k = m["explain_top_k"]
    explained: list[list[str]] = []
    now_ms = time.time

    def process(value: bytes, key: object, timestamp: int, headers: object) -> dict:
        n = stats["read"] = stats["read"] + 1
        if n == 1:
            marks["first"] = time.monotonic()
        ev, reason = validator.parse(value)
        if ev is not None:
            t_ms, reason = validator.check(ev, timestamp)
        if reason is not None:
            stats["quarantined"] += 1
            out = {"reason": reason, "kafka_timestamp_ms": timestamp}
        else:
            card, eid = ev[key_f], ev[id_f]
            if windows.seen(card, eid, t_ms):
                stats["duplicates"] += 1
                out = {"reason": "duplicate_event", id_f: eid, key_f: card}
            else:
                aggs = windows.add(card, eid, t_ms, float(ev[sum_of]) if sum_of else 0.0)
                x = [float(ev[p]) for p in plain]
                if hour:
                    x.append(float((t_ms // 3_600_000) % 24))
                x += aggs
                score = model.score(x, ev)
                expl = model.explain(x, ev, top_k) if top_k else None
                now = int(now_ms() * 1000)  # scored and explained, as rtml's scored_at_ms
                stats["scored"] += 1
                out = {
                    id_f: eid,
                    time_f: ev[time_f],
                    key_f: card,
                    "score": score,
                    "decision": int(score >= model.threshold),
                    "model_version": model.version,
                    "scored_at_ms": now,
                    "latency_ms": now - timestamp,
                    "kafka_timestamp_ms": timestamp,
                }
                if expl is not None:
                    out.update(expl)
                if keep_scores:
                    ids.append(eid)
                    scores.append(score)
                    if expl is not None:
                        explained.append([expl[f"explain_{i}_feature"] for i in range(1, top_k + 1)])
                else:
                    lat.append((timestamp, now - timestamp))
        if n == args.warmup_events:
            marks["warm"] = time.monotonic()
        if n == args.events:
            marks["last"] = time.monotonic()
            app.stop()
        return out

    def topic_of(value: dict, key: object, timestamp: int, headers: object) -> object:
        return quarantine_t if "reason" in value else scores_t

    on_assign = app._on_assign  # Quix has no public hook for "partitions assigned": wrap its own

    def assigned(consumer: object, partitions: list) -> None:
        on_assign(consumer, partitions)
        marks.setdefault("assigned", time.monotonic())
        if args.ready:
            with open(args.ready, "w") as fh:
                fh.write(str(len(partitions)))

    app._on_assign = assigned  # type: ignore[method-assign]
    sdf = app.dataframe(events)
    sdf = sdf.apply(process, metadata=True)
    sdf.to_topic(topic_of, key=lambda v: v.get(id_f) or "")
    cpu0 = time.process_time()
    app.run()
    marks["end"] = time.monotonic()
    result = {
        **stats,
        "cpu_seconds": round(time.process_time() - cpu0, 3),
        "peak_rss_mb": _peak_rss_mb(),
        "marks": marks,
    }
    if keep_scores:
        result["ids"], result["scores"], result["explained"] = ids, scores, explained
    else:
        result["latency"] = lat
    with open(args.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
