"""Workload: what durable mode costs a log call, beside the default mode, in one run.

The same log call (``log.info`` with four fields, local output to /dev/null)
through the file exporter, in three modes:

* **default**: the record is queued in memory and the call returns;
* **durable**: ``LOGPIPE_DURABLE=true``: the call returns once the record is
  written and fsynced to the journal (group commit, default ``max_wait`` 2 ms);
* **durable, max_wait 0 / 10 ms**: how long the first caller of a group commit
  may wait for the callers of the previous batch (``LOGPIPE_DURABLE_MAX_WAIT``).

For each: the cost of one call from one thread (median and p99 of single
calls), and the throughput of calls from 1 and from 4 threads (records/s,
time from the first call to the last return), with the number of records per
fsync. The journal lives in a temporary directory on the same disk as the
repository (``bench/.durable-*``), not in /tmp, which may be a RAM disk where
an fsync costs nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import REPO, Context, Section, Target, fmt_num, median, null_logger, percentile

KEY = "durable_mode"
TITLE = "Durable mode: cost of a log call and throughput, beside the default mode"

MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("default (in-memory queue)", {}),
    "durable": ("durable (journal, group commit, max_wait 2 ms: the default)", {"durable": True}),
    "durable_nowait": ("durable, max_wait 0", {"durable": True, "durable_max_wait": 0.0}),
    "durable_wait": ("durable, max_wait 10 ms", {"durable": True, "durable_max_wait": 0.01}),
}


def configure(directory: Path, settings: dict[str, Any]) -> Callable[[int], None]:
    import logpipe

    pipeline = logpipe.configure(
        exporter="file",
        exporter_options={"file": {"path": directory / "out.jsonl"}},
        durable_dir=directory / "journal",
        queue_size=1_000_000,
        local_render="json",
        handle_sigterm=False,
        **settings,
    )
    log = null_logger(pipeline.processors())

    def call(i: int) -> None:
        log.info("order placed", order_id=i, user="alice", amount=42.5, path="/api/orders")

    return call


def single_calls(call: Callable[[int], None], n: int) -> list[float]:
    """Seconds of each of *n* calls, one at a time."""
    times = []
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        call(i)
        times.append(clock() - t0)
    return times


def throughput(call: Callable[[int], None], threads: int, per_thread: int) -> float:
    """Calls per second from *threads* threads, first call to last return."""
    start = threading.Barrier(threads + 1)

    def work() -> None:
        start.wait()
        for i in range(per_thread):
            call(i)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return threads * per_thread / (time.perf_counter() - t0)


def measure(mode: str, n: int, per_thread: int) -> dict[str, Any]:
    import logpipe

    directory = Path(tempfile.mkdtemp(prefix=".durable-", dir=REPO / "bench"))
    try:
        call = configure(directory, MODES[mode][1])
        for i in range(200):  # warm-up: caches, the journal's first segment
            call(i)
        times = sorted(single_calls(call, n))
        one = throughput(call, 1, per_thread)
        pipeline = logpipe.current()
        assert pipeline is not None
        commits = getattr(pipeline.dispatchers[0], "group_commits", lambda: (0, 0))
        before = commits()
        four = throughput(call, 4, per_thread)
        after = commits()
        per_fsync = (after[1] - before[1]) / (after[0] - before[0]) if after[0] > before[0] else None
        delivered = logpipe.flush(120)
        stats = logpipe.stats()["file"]
        logpipe.shutdown()
        return {
            "median_us": median(times) * 1e6,
            "p99_us": percentile(times, 99) * 1e6,
            "one": one,
            "four": four,
            "per_fsync": per_fsync,
            "lost": stats.dropped + stats.failed,
            "delivered": delivered,
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(ctx: Context) -> Section:
    n, per_thread = (500, 500) if ctx.quick else (5_000, 5_000)
    section = Section(
        key=KEY,
        title=TITLE,
        columns=[
            "mode",
            "call median (us)",
            "call p99 (us)",
            "records/s, 1 thread",
            "records/s, 4 threads",
            "records per fsync, 4 threads",
        ],
        quick=ctx.quick,
    )
    results = {}
    for mode, (label, _) in MODES.items():
        r = results[mode] = measure(mode, n, per_thread)
        ctx.say(f"durable_mode {mode}: {r['median_us']:.1f} us/call, {r['one']:,.0f} / {r['four']:,.0f} records/s")
        section.rows.append(
            {
                "mode": label,
                "key": mode,
                "call median (us)": fmt_num(r["median_us"]),
                "call p99 (us)": fmt_num(r["p99_us"]),
                "records/s, 1 thread": fmt_num(r["one"]),
                "records/s, 4 threads": fmt_num(r["four"]),
                "records per fsync, 4 threads": "-" if r["per_fsync"] is None else f"{r['per_fsync']:.1f}",
            }
        )
    section.extra = results
    durable = results["durable"]
    section.targets.append(
        Target(
            "durable mode: nothing dropped, everything delivered",
            f"{durable['lost']} lost, flush {'ok' if durable['delivered'] else 'timed out'}",
            durable["lost"] == 0 and bool(durable["delivered"]),
        )
    )
    section.notes.append(
        f"File exporter; {n:,} single calls timed one by one, then {per_thread:,} calls per thread from 1 and from "
        f"4 threads. A durable call waits for one write and one fsync of the journal, shared by the callers that "
        f"arrive together (records per fsync); its cost is the disk's fsync latency, which differs by orders of "
        f"magnitude between a laptop SSD, a cloud volume and a RAM disk."
    )
    return section
