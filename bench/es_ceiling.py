"""Workload: the Elasticsearch node's raw bulk ceiling for logpipe's documents.

The best indexing throughput this node reaches for the same documents the
shipper sends (N KafkaLog records, ``create`` with ``_id`` = ``Id`` into the
daily index made from logpipe's template), with nothing but bulk requests:
the bodies are NDJSON bytes built before the clock starts, and *threads*
keep that many requests in flight over keep-alive HTTP connections
(``http.client``: no client library in the way).

The batch size is found by doubling, as Elastic advises: 100, 200, 400 ...
documents per request until two steps in a row no longer improve the best
rate by `MIN_GAIN` (or the next size would leave a thread without a request). At the
best size the thread count is then varied. The best figure is the ceiling,
the denominator of the ship rows (``peers_kafka_es``).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .common import ES_URL, Context, Section, fmt_num, require_es, require_module, unique
from .peers import CPUProbe

KEY = "es_ceiling"
TITLE = "8. Elasticsearch raw bulk ceiling (pre-serialised bodies, concurrent requests)"
START = 100
MIN_GAIN = 0.03
THREADS = 4


@dataclass
class Ceiling:
    """The best setting found and its rate, with every step measured."""

    batch: int
    threads: int
    rate: float
    steps: list[dict[str, Any]] = field(default_factory=list)


#: The last ceiling measured in this process: peers_kafka_es reuses its setting.
LAST: Ceiling | None = None


def doubling_search(
    measure: Callable[[int], float],
    start: int = START,
    limit: int = 51_200,
    min_gain: float = MIN_GAIN,
    patience: int = 2,
) -> tuple[int, float, list[tuple[int, float]]]:
    """Double the batch from *start* while the rate improves by more than *min_gain*.

    Returns (best batch, its rate, every (batch, rate) measured). Stops after
    *patience* steps in a row that do not beat the best so far by *min_gain*,
    or past *limit*. One flat step is not enough to stop: on a shared machine
    a single noisy measurement ended the search at 100 documents a request,
    below the 400 that quieter runs found best.
    """
    steps: list[tuple[int, float]] = []
    best_batch, best_rate = 0, 0.0
    flat = 0
    batch = start
    while batch <= limit:
        rate = measure(batch)
        steps.append((batch, rate))
        if rate > best_rate * (1 + min_gain):
            best_batch, best_rate, flat = batch, rate, 0
        else:
            if rate > best_rate:  # within the noise: keep the better figure
                best_batch, best_rate = batch, rate
            flat += 1
            if flat >= patience:
                break
        batch *= 2
    return best_batch, best_rate, steps


def bodies(records: Sequence[Any], prefix: str, batch: int) -> list[bytes]:
    """The bulk bodies, *batch* ``create`` actions each, as the shipper builds them."""
    from logpipe import elasticsearch as es

    out = []
    for i in range(0, len(records), batch):
        lines = []
        for r in records[i : i + batch]:
            lines.append(
                b'{"create":{"_index":"%s","_id":"%s"}}\n' % (es.index_name(prefix, r.ts).encode(), r.id.encode())
            )
            lines.append(r.payload + b"\n")
        out.append(b"".join(lines))
    return out


def post_all(payloads: Sequence[bytes], threads: int, url: str = ES_URL) -> tuple[float, int]:
    """Send every body on *threads* keep-alive connections; (seconds, items that failed)."""
    parts = urlsplit(url)
    work: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    for body in payloads:
        work.put(body)
    for _ in range(threads):
        work.put(None)
    failed = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 9200, timeout=120)
        headers = {"Content-Type": "application/x-ndjson"}
        try:
            conn.connect()
            start.wait()
            while (body := work.get()) is not None:
                conn.request("POST", "/_bulk?filter_path=errors,items.*.error.type", body, headers)
                answer = conn.getresponse()
                text = answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"bulk answered {answer.status}: {text[:200]!r}")
                if b'"errors":true' in text:
                    with lock:
                        failed[0] += text.count(b'"type"')
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            start.abort()
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return seconds, failed[0]


def measure_once(
    records: Sequence[Any], batch: int, threads: int, probe: CPUProbe | None = None
) -> tuple[float, int, dict[str, float]]:
    """Index *records* into fresh indices (logpipe's template); (docs/s, documents counted, cores).

    With *probe*, the cores each probed process used while the requests
    were sent (the bench's own process, the raw client, as ``client``).
    """
    from logpipe import elasticsearch as es

    from .ship_throughput import count, drop, prepare_indices

    prefix = unique("bench-ceil")
    client = prepare_indices(prefix)
    try:
        for index in sorted({es.index_name(prefix, r.ts) for r in records}):
            client.options(ignore_status=400).indices.create(index=index)  # created before the clock
        payloads = bodies(records, prefix, batch)
        probe = probe.with_process("client", os.getpid()) if probe else None
        before = probe.read() if probe else None
        seconds, _failed = post_all(payloads, threads)
        cores = CPUProbe.cores(before, probe.read()) if probe and before else {}
        return len(records) / seconds, count(client, prefix), cores
    finally:
        drop(client, prefix)


def find_ceiling(ctx: Context, records: Sequence[Any], rounds: int, vary_threads: bool) -> Ceiling:
    """Doubling search at `THREADS`, then other thread counts at the best batch; best of *rounds* each."""
    global LAST
    n = len(records)
    steps: list[dict[str, Any]] = []

    def measure(batch: int, threads: int = THREADS) -> float:
        rates = []
        for _ in range(rounds):
            rate, counted, _cores = measure_once(records, batch, threads)
            if counted < n:
                raise RuntimeError(f"raw bulk indexed {counted:,}/{n:,} documents (batch {batch})")
            rates.append(rate)
        steps.append({"batch": batch, "threads": threads, "rate": max(rates), "rates": rates})
        ctx.say(f"{KEY}: batch {batch:,} x {threads} threads: {max(rates):,.0f} docs/s")
        return max(rates)

    batch, rate, _ = doubling_search(measure, limit=max(START, n // (THREADS * 2)))
    best = Ceiling(batch, THREADS, rate, steps)
    if vary_threads:
        for threads in (2, 8):
            r = measure(batch, threads)
            if r > best.rate:
                best = Ceiling(batch, threads, r, steps)
    LAST = best
    return best


def sizes(ctx: Context) -> tuple[int, int]:
    """(documents per measurement, rounds per step) of this workload: ``peers_kafka_es`` searches alike."""
    return (20_000, 1) if ctx.quick else (200_000, 2)


def search(ctx: Context, records: Sequence[Any]) -> Ceiling:
    """The ceiling as this workload finds it: doubling, best of `sizes`' rounds, other thread counts unless quick."""
    return find_ceiling(ctx, records, sizes(ctx)[1], vary_threads=not ctx.quick)


def run(ctx: Context) -> Section:
    started = time.perf_counter()
    require_es()
    require_module("elasticsearch", "elasticsearch")
    from .kafka_throughput import make_records
    from .peers_file_kafka import RECORD_SIZE

    n, rounds = sizes(ctx)
    records = make_records(n, size=RECORD_SIZE)
    size = sum(len(r.payload) for r in records) / n
    best = search(ctx, records)
    section = Section(
        key=KEY,
        title=TITLE,
        columns=["batch (docs/request)", "threads", "docs/s", "MB/s of sources", "best"],
        quick=ctx.quick,
    )
    for step in best.steps:
        is_best = step["batch"] == best.batch and step["threads"] == best.threads
        section.rows.append(
            {
                "batch (docs/request)": f"{step['batch']:,}",
                "threads": str(step["threads"]),
                "docs/s": fmt_num(step["rate"]),
                "MB/s of sources": f"{step['rate'] * size / 1e6:.1f}",
                "best": "**ceiling**" if is_best else "",
            }
        )
    section.notes.append(
        f"{n:,} KafkaLog documents of {size:.0f} bytes per measurement, `create` with `_id` = `Id` into a fresh "
        "daily index made from logpipe's template (1 shard, 0 replicas), created before the clock starts; the "
        f"bodies are built beforehand, and {THREADS} threads keep a request each in flight on keep-alive "
        f"connections (`http.client`, answers filtered to errors). Batch sizes double from {START} until two steps "
        f"in a row do not beat the best by {MIN_GAIN:.0%}"
        + (", then 2 and 8 threads are tried at the best size" if not ctx.quick else "")
        + f"; each figure is the best of {rounds} run(s). The ceiling: {fmt_num(best.rate)} docs/s at "
        f"{best.batch:,} documents x {best.threads} threads. The node shares the machine's cores with the bench "
        "(and, in the ship rows, with the broker and the shipper)."
    )
    section.extra = {"ceiling": best.rate, "batch": best.batch, "threads": best.threads, "steps": best.steps, "n": n}
    section.seconds = time.perf_counter() - started
    return section
