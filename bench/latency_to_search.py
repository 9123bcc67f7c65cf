"""Workload 6: latency from the log call to searchable in Elasticsearch, at 1,000 events/s.

An application process logs 1,000 events/s (paced in 10 ms ticks), each with
a sequence number, and records the wall-clock time of every call. The parent
polls Elasticsearch every 50 ms for documents it has not seen yet (a range
query on the sequence number plus a terms query for stragglers) and notes
when each one first answers a search. Latency = first seen - log call; the
resolution is the poll interval plus one search round trip.

Two paths, with default settings (dispatcher batch delay 0.2 s, shipper
batches of up to 2,000 messages, sent as soon as the consumer has nothing more
buffered while Elasticsearch is idle; Elasticsearch's 1 s refresh interval):

* **logpipe -> Kafka -> logpipe ship -> Elasticsearch**: the designed
  pipeline (``exporter="kafka"``, acks=all, then ``logpipe ship`` running as a
  separate process, joined to its consumer group before the first event);
* **logpipe -> Elasticsearch** directly (``exporter="elasticsearch"``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from .common import (
    ES_URL,
    KAFKA_BOOTSTRAP,
    REPO,
    Context,
    Section,
    Skip,
    Target,
    create_topic,
    exporter_available,
    fmt_num,
    median,
    null_logger,
    percentile,
    require_es,
    require_kafka,
    unique,
)

KEY = "latency_to_search"
TITLE = "6. Latency from log call to searchable in Elasticsearch (1,000 events/s)"
POLL = 0.05


# -- the application ------------------------------------------------------------------------


def app(args: argparse.Namespace) -> int:

    import logpipe

    options: dict[str, Any]
    if args.exporter == "kafka":
        options = {"kafka": {"bootstrap_servers": args.bootstrap, "topic": args.topic, "acks": "all"}}
    else:
        options = {"elasticsearch": {"hosts": args.es, "index_prefix": args.prefix, "replicas": 0}}
    procs = logpipe.processors(
        exporter=args.exporter, exporter_options=options, fallback_exporter="none", service="bench-latency"
    )
    pipeline = logpipe.current()
    assert pipeline is not None
    log = null_logger(procs)
    per_tick = max(1, round(args.rate / 100))
    n = int(args.rate * args.duration)
    times: list[float] = []
    clock = time.time
    start = time.monotonic()
    tick = 0
    i = 0
    while i < n:
        for _ in range(per_tick):
            times.append(clock())
            log.info("latency probe", seq=f"{i:08d}", user="alice", path="/api/orders")
            i += 1
        tick += 1
        sleep = start + tick * 0.01 - time.monotonic()
        if sleep > 0:
            time.sleep(sleep)
    pipeline.force_flush(60)
    stats = list(pipeline.stats().values())[0]
    json.dump({"times": times, "sent": stats.sent, "submitted": stats.submitted}, sys.stdout)
    sys.stdout.flush()
    pipeline.shutdown(10)
    return 0


# -- the poller ----------------------------------------------------------------------------------


class Poller(threading.Thread):
    """Notes when each sequence number first answers a search."""

    def __init__(self, prefix: str) -> None:
        super().__init__(daemon=True)
        from elasticsearch import Elasticsearch

        self.client = Elasticsearch(ES_URL, request_timeout=30)
        self.prefix = prefix
        self.seen: dict[int, float] = {}
        self.high = -1
        self.stop = threading.Event()
        self.errors = 0

    def _search(self, query: dict[str, Any], size: int) -> list[int]:
        answer = self.client.search(
            index=f"{self.prefix}-*",
            query=query,
            size=size,
            source=["Field.seq"],
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        return [int(h["_source"]["Field"]["seq"]) for h in answer["hits"]["hits"]]

    def run(self) -> None:
        while not self.stop.is_set():
            t_poll = time.time()
            try:
                found = self._search({"range": {"Field.seq": {"gt": f"{self.high:08d}", "lte": "99999999"}}}, 10000)
                missing = [s for s in range(0, self.high) if s not in self.seen][:5000]
                if missing:
                    found += self._search({"terms": {"Field.seq": [f"{s:08d}" for s in missing]}}, len(missing))
            except Exception:
                self.errors += 1
                found = []
            now = time.time()
            for s in found:
                if s not in self.seen:
                    self.seen[s] = now
            if found:
                self.high = max(self.high, max(found))
            self.stop.wait(max(0.0, POLL - (time.time() - t_poll)))


# -- one path -----------------------------------------------------------------------------------


def run_path(path: str, rate: int, duration: float, say: Any) -> dict[str, Any]:
    prefix = unique(f"bench-lat-{path}")
    topic = unique("bench-lat")
    from logpipe import elasticsearch as es

    opts = es.ElasticsearchOptions(hosts=(ES_URL,), index_prefix=prefix, replicas=0)
    client = es.make_client(opts)
    es.install_template(client, opts)
    ship: subprocess.Popen[str] | None = None
    ship_lines: list[str] = []
    poller = Poller(prefix)
    try:
        if path == "kafka":
            create_topic(topic)
            from .ship_throughput import ship_command

            env = {**os.environ, "LOGPIPE_ELASTICSEARCH_REPLICAS": "0"}
            ship = subprocess.Popen(
                ship_command(topic, unique("bench-lat-group"), prefix),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            ready = threading.Event()

            def read() -> None:
                assert ship is not None and ship.stderr is not None
                for line in ship.stderr:
                    ship_lines.append(line.rstrip())
                    if "running" in line:
                        ready.set()

            threading.Thread(target=read, daemon=True).start()
            if not ready.wait(60):
                raise RuntimeError("logpipe ship did not start: " + " | ".join(ship_lines[-5:]))
            time.sleep(3.0)  # let it join the group and get its partitions
        poller.start()
        cmd = [
            sys.executable,
            "-m",
            "bench.latency_to_search",
            "app",
            "--exporter",
            "kafka" if path == "kafka" else "elasticsearch",
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--bootstrap",
            KAFKA_BOOTSTRAP,
            "--topic",
            topic,
            "--es",
            ES_URL,
            "--prefix",
            prefix,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 300, cwd=tmp)
        if done.returncode != 0:
            raise RuntimeError(f"the application failed: {done.stderr[-1500:]}")
        result = json.loads(done.stdout)
        times: list[float] = result["times"]
        n = len(times)
        deadline = time.monotonic() + 60
        while len(poller.seen) < n and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        poller.stop.set()
        poller.join(10)
        if ship is not None:
            ship.send_signal(signal.SIGTERM)
            try:
                ship.wait(60)
            except subprocess.TimeoutExpired:
                ship.kill()
        try:
            client.options(ignore_status=404).indices.delete(index=f"{prefix}-*")
            client.options(ignore_status=404).indices.delete_index_template(name=es.template_name(prefix))
        except Exception:
            pass
        if path == "kafka":
            from .kafka_throughput import _delete_topic

            _delete_topic(topic)
    lat = sorted(poller.seen[i] - times[i] for i in range(n) if i in poller.seen)
    say(
        f"latency_to_search {path}: {len(lat):,}/{n:,} seen, p50 {percentile(lat, 50) * 1000:.0f} ms, "
        f"p99 {percentile(lat, 99) * 1000:.0f} ms"
    )
    return {
        "n": n,
        "seen": len(lat),
        "p50_ms": percentile(lat, 50) * 1000,
        "p90_ms": percentile(lat, 90) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else float("nan"),
        "poll_errors": poller.errors,
    }


def run(ctx: Context) -> Section:
    require_es()
    if not exporter_available("elasticsearch"):
        raise Skip("logpipe's elasticsearch exporter is not registered")
    started = time.perf_counter()
    rate = 1000
    duration, rounds = (5.0, 1) if ctx.quick else (30.0, 2)
    paths: dict[str, str] = {"es": "logpipe -> Elasticsearch (direct exporter)"}
    notes = []
    try:
        require_kafka()
        import logpipe.ship  # noqa: F401

        if exporter_available("kafka"):
            paths = {"kafka": "logpipe -> Kafka -> logpipe ship -> Elasticsearch", **paths}
    except (Skip, ImportError) as exc:
        notes.append(f"The Kafka path was skipped: {exc}")
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in paths}
    order = list(paths)
    for r in range(rounds):
        for key in order[r % len(order) :] + order[: r % len(order)]:
            results[key].append(run_path(key, rate, duration, ctx.say))
    section = Section(
        key=KEY,
        title=TITLE,
        columns=["path", "p50 ms", "p90 ms", "p99 ms", "max ms", "p99 spread ms", "searchable"],
        quick=ctx.quick,
    )
    figures = {}
    for key, label in paths.items():
        rr = results[key]
        fig = {m: median(x[m] for x in rr) for m in ("p50_ms", "p90_ms", "p99_ms", "max_ms")}
        fig["seen"] = sum(x["seen"] for x in rr)
        fig["n"] = sum(x["n"] for x in rr)
        figures[key] = fig
        p99s = [x["p99_ms"] for x in rr]
        section.rows.append(
            {
                "path": label,
                "key": key,
                "p50 ms": fmt_num(fig["p50_ms"]),
                "p90 ms": fmt_num(fig["p90_ms"]),
                "p99 ms": fmt_num(fig["p99_ms"]),
                "max ms": fmt_num(max(x["max_ms"] for x in rr)),
                "p99 spread ms": f"{fmt_num(min(p99s))}-{fmt_num(max(p99s))}",
                "searchable": f"{fig['seen']:,}/{fig['n']:,}",
            }
        )
    section.extra = {"figures": figures, "rounds": results}
    for key, label in paths.items():
        section.targets.append(
            Target(
                f"every event searchable ({label})",
                f"{figures[key]['seen']:,}/{figures[key]['n']:,}",
                figures[key]["seen"] >= figures[key]["n"],
            )
        )
    section.notes.append(
        f"{rate:,} events/s for {duration:.0f} s per run, {rounds} run(s) per path in rotating order; figures are the "
        f"median over runs. Elasticsearch is polled every {POLL * 1000:.0f} ms, so a latency is accurate to about "
        "that plus one search round trip. The floor is set by the settings, not by logpipe's code: the "
        "dispatcher's batch delay (0.2 s), the shipper's batching (a batch waits up to 1 s to fill only while "
        "others are being indexed) and the index "
        "refresh interval (1 s); `LOGPIPE_BATCH_DELAY`, `LOGPIPE_SHIP_BATCH_MAX_WAIT` and the index's "
        "`refresh_interval` trade latency for fewer, larger requests."
    )
    section.notes.extend(notes)
    section.seconds = time.perf_counter() - started
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("app")
    a.add_argument("--exporter", required=True)
    a.add_argument("--rate", type=int, default=1000)
    a.add_argument("--duration", type=float, default=30)
    a.add_argument("--bootstrap", default=KAFKA_BOOTSTRAP)
    a.add_argument("--topic", default="logpipe")
    a.add_argument("--es", default=ES_URL)
    a.add_argument("--prefix", default="logpipe")
    sys.exit(app(parser.parse_args()))
