"""Workload 5: memory of an application logging through a broker outage.

An application process (this module's ``child`` mode) logs 5,000 events/s
through ``logpipe.processors(exporter="kafka")`` with the spill policy and the
spool fallback, paced in 10 ms ticks. The parent samples its RSS every
0.25 s (psutil, from outside) while it stops the broker for 60 s and starts
it again; afterwards the spool replays into Kafka. The outage uses a broker
of its own (``scripts/kafka.sh`` with another port and state directory), so
the shared broker other work uses is never stopped.

Reported: RSS before, peak during and after the outage, the growth, the log
call's latency (p99 and max, per second), what went where (sent, spilled to
the spool, replayed, lost), every event counted in the topic at the end, and
the number of socket operations the logging thread made (an audit hook:
``socket.connect``, ``getaddrinfo`` ...; it must be 0, the network is only
touched by background threads). The curve is a plot in docs/img/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import (
    REPO,
    SCRIPTS,
    Context,
    Section,
    Skip,
    Target,
    exporter_available,
    median,
    null_logger,
    require_module,
    unique,
)

KEY = "memory_outage"
TITLE = "5. Memory through a 60 s broker outage (spill policy)"
PORT = int(os.environ.get("LOGPIPE_BENCH_OUTAGE_KAFKA_PORT", "29092"))
STATE = REPO / ".services" / "bench-outage"


# -- the application ------------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    """The application: log at *rate* for *duration* seconds, report once a second on stdout."""

    import logpipe

    main_thread = threading.get_ident()
    socket_ops: dict[str, int] = {}
    in_call = [False]

    def audit(event: str, _args: Any) -> None:
        if event.startswith("socket.") and in_call[0] and threading.get_ident() == main_thread:
            socket_ops[event] = socket_ops.get(event, 0) + 1

    if args.audit:
        sys.addaudithook(audit)
    procs = logpipe.processors(
        exporter=args.exporter,
        exporter_options={
            "kafka": {"bootstrap_servers": args.bootstrap, "topic": args.topic, "acks": "all"},
            "spool": {"dir": args.spool},
        },
        fallback_exporter="spool" if args.exporter == "kafka" else "none",
        overflow="spill" if args.exporter == "kafka" else "block",
        service="bench-outage",
    )
    pipeline = logpipe.current()
    assert pipeline is not None
    dispatcher = pipeline.dispatchers[0]
    spool = getattr(dispatcher.fallback, "inner", dispatcher.fallback)
    log = null_logger(procs)
    per_tick = max(1, round(args.rate / 100))
    pc = time.perf_counter_ns
    start = time.monotonic()
    next_report = start + 1.0
    tick = 0
    logged = 0
    durations: list[int] = []
    print(json.dumps({"ready": True}), flush=True)
    while True:
        now = time.monotonic()
        if now - start >= args.duration:
            break
        for _ in range(per_tick):
            in_call[0] = True
            t0 = pc()
            log.info("order placed", order_id=logged, user="alice", amount=42.5, path="/api/orders")
            durations.append(pc() - t0)
            in_call[0] = False
            logged += 1
        tick += 1
        if now >= next_report:
            durations.sort()
            st = dispatcher.stats()
            sp = spool.stats() if hasattr(spool, "stats") else None
            print(
                json.dumps(
                    {
                        "t": round(now - start, 3),
                        "logged": logged,
                        "p99_us": durations[int(len(durations) * 0.99)] / 1000 if durations else 0,
                        "max_us": durations[-1] / 1000 if durations else 0,
                        "sent": st.sent,
                        "spilled": st.spilled,
                        "failed": st.failed,
                        "dropped": st.dropped,
                        "queued": st.queued,
                        "replayed": sp.replayed if sp else None,
                        "pending_bytes": sp.pending_bytes if sp else None,
                    }
                ),
                flush=True,
            )
            durations = []
            next_report += 1.0
        sleep = start + tick * 0.01 - time.monotonic()
        if sleep > 0:
            time.sleep(sleep)
    # the outage is over: wait for the spool to drain into Kafka
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline:
        sp = spool.stats() if hasattr(spool, "stats") else None
        if sp is None or sp.pending_bytes == 0:
            break
        time.sleep(0.5)
    pipeline.force_flush(30)
    st = dispatcher.stats()
    sp = spool.stats() if hasattr(spool, "stats") else None
    print(
        json.dumps(
            {
                "final": True,
                "logged": logged,
                "stats": vars(st)
                if not hasattr(st, "__dataclass_fields__")
                else {k: getattr(st, k) for k in st.__dataclass_fields__},
                "spool": None if sp is None else {k: getattr(sp, k) for k in sp.__dataclass_fields__},
                "socket_ops_in_log_calls": socket_ops,
            }
        ),
        flush=True,
    )
    pipeline.shutdown(10)
    return 0


# -- the parent --------------------------------------------------------------------------------


def broker(command: str) -> str:
    env = {
        **os.environ,
        "LOGPIPE_SERVICES_DIR": str(STATE),
        "LOGPIPE_SERVICES_KAFKA_PORT": str(PORT),
        "LOGPIPE_SERVICES_KAFKA_CONTROLLER_PORT": str(PORT + 1),
        "LOGPIPE_SERVICES_KAFKA_PARTITIONS": "3",
    }
    done = subprocess.run(
        ["bash", str(SCRIPTS / "kafka.sh"), command], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0 and command != "status":
        raise RuntimeError(f"kafka.sh {command} (port {PORT}) failed: {done.stderr[-2000:]}")
    return done.stdout


def topic_count(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="logpipe-bench-count")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        return sum(ends[tp] - begins[tp] for tp in tps)
    finally:
        consumer.close()


def unique_ids(bootstrap: str, topic: str, expected: int, timeout: float = 120.0) -> int:
    """How many distinct ``id`` headers the topic holds (the at-least-once check)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=5000,
        client_id="logpipe-bench-ids",
    )
    ids: set[bytes] = set()
    deadline = time.monotonic() + timeout
    try:
        for message in consumer:
            for key, value in message.headers or []:
                if key == "id":
                    ids.add(value)
            if time.monotonic() > deadline:
                break
    finally:
        consumer.close()
    return len(ids)


def run(ctx: Context) -> Section:
    psutil = require_module("psutil", "psutil")
    if not (exporter_available("kafka") and exporter_available("spool")):
        raise Skip("logpipe's kafka and spool exporters are not both registered yet")
    import shutil
    import tempfile

    if shutil.which("java") is None:
        raise Skip("java not found: the outage needs a broker of its own (scripts/kafka.sh)")
    before, outage, after = (5, 10, 10) if ctx.quick else (20, 60, 40)
    rate = 5000
    started = time.perf_counter()
    bootstrap = f"127.0.0.1:{PORT}"
    ctx.say(f"memory_outage: starting a broker of its own on {bootstrap}")
    broker("start")
    topic = unique("bench-outage")
    from .common import create_topic

    create_topic(topic, bootstrap=bootstrap)
    spool_dir = Path(tempfile.mkdtemp(prefix="logpipe-bench-spool-"))
    cmd = [
        sys.executable,
        "-m",
        "bench.memory_outage",
        "child",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--rate",
        str(rate),
        "--duration",
        str(before + outage + after),
        "--spool",
        str(spool_dir),
        "--drain",
        "120",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=spool_dir)
    reports: list[dict[str, Any]] = []
    errors: list[str] = []

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                reports.append(json.loads(line))
            except ValueError:
                errors.append(line.rstrip())

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            errors.append(line.rstrip())

    threads = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in threads:
        t.start()
    samples: list[tuple[float, float]] = []
    events: list[tuple[str, float]] = []
    try:
        while not reports:
            if proc.poll() is not None:
                raise RuntimeError("the application exited early: " + " | ".join(errors[-5:]))
            time.sleep(0.05)
        ps = psutil.Process(proc.pid)
        t0 = time.monotonic()
        stopped = restarted = False
        while proc.poll() is None:
            now = time.monotonic() - t0
            try:
                samples.append((now, tree_rss(ps) / 2**20))
            except psutil.Error:
                break
            if not stopped and now >= before:
                stopped = True
                ctx.say("memory_outage: stopping the broker")
                events.append(("outage", time.monotonic() - t0))
                broker("stop")
                events.append(("down", time.monotonic() - t0))
            if stopped and not restarted and now >= before + outage:
                restarted = True
                ctx.say("memory_outage: starting the broker again")
                events.append(("restart", time.monotonic() - t0))
                threading.Thread(
                    target=lambda: (broker("start"), events.append(("up", time.monotonic() - t0))), daemon=True
                ).start()
            time.sleep(0.25)
        proc.wait(300)
        for t in threads:
            t.join(10)
        final = next((r for r in reports if r.get("final")), None)
        if final is None:
            raise RuntimeError("the application gave no final report: " + " | ".join(errors[-5:]))
        ctx.say("memory_outage: counting what reached the topic")
        in_topic = topic_count(bootstrap, topic)
        distinct = unique_ids(bootstrap, topic, final["logged"])
    finally:
        if proc.poll() is None:
            proc.kill()
        broker("wipe")  # stop, and delete its data: each run writes ~1 GB
        shutil.rmtree(spool_dir, ignore_errors=True)

    t_out = next((t for name, t in events if name == "outage"), float(before))
    t_back = next((t for name, t in events if name == "restart"), float(before + outage))
    pre = [m for t, m in samples if t_out - 10 <= t < t_out] or [m for t, m in samples if t < t_out]
    during = [m for t, m in samples if t_out <= t < t_back]
    post = [m for t, m in samples if t >= t_back]
    rss_before = max(pre) if pre else float("nan")
    peak_during = max(during) if during else float("nan")
    peak_after = max(post) if post else float("nan")
    per_second = [r for r in reports if "t" in r]
    p99_during = max((r["p99_us"] for r in per_second if t_out <= r["t"] < t_back), default=float("nan"))
    max_during = max((r["max_us"] for r in per_second if t_out <= r["t"] < t_back), default=float("nan"))
    p99_normal = max((r["p99_us"] for r in per_second if r["t"] < t_out), default=float("nan"))
    stats = final["stats"]
    spool = final.get("spool") or {}
    logged = final["logged"]
    sockets = sum(final["socket_ops_in_log_calls"].values())
    achieved = logged / (before + outage + after)

    image = ctx.docs / "img" / "memory_outage.png"
    plotted = plot(samples, per_second, t_out, t_back, image, rate)
    section = Section(
        key=KEY,
        title=TITLE,
        columns=["measure", "value"],
        quick=ctx.quick,
    )
    rows = [
        ("events logged", f"{logged:,} ({achieved:,.0f}/s; target rate {rate:,}/s)"),
        ("phases", f"{before} s normal, {outage} s broker down, {after} s after (spool replays)"),
        ("RSS before the outage (max of last 10 s)", f"{rss_before:.1f} MiB"),
        ("RSS peak during the outage", f"{peak_during:.1f} MiB"),
        ("RSS peak after the outage (replay)", f"{peak_after:.1f} MiB"),
        ("growth during the outage", f"{peak_during - rss_before:+.1f} MiB"),
        ("log call p99 / max during the outage (worst second)", f"{p99_during:.0f} us / {max_during:.0f} us"),
        ("log call p99 before the outage (worst second)", f"{p99_normal:.0f} us"),
        ("socket operations made by the logging thread", f"{sockets} {final['socket_ops_in_log_calls'] or ''}"),
        (
            "sent / spilled / failed / dropped",
            f"{stats['sent']:,} / {stats['spilled']:,} / {stats['failed']:,} / {stats['dropped']:,}",
        ),
        (
            "spool: written / replayed / pending bytes",
            f"{spool.get('written', 0):,} / {spool.get('replayed', 0):,} / {spool.get('pending_bytes', 0):,}",
        ),
        ("messages in the topic / distinct ids", f"{in_topic:,} / {distinct:,} (of {logged:,} logged)"),
    ]
    section.rows = [{"measure": a, "value": b} for a, b in rows]
    bounded = peak_during - rss_before < 50 and peak_after - rss_before < 80
    section.targets.append(
        Target(
            "memory stays bounded through a 60 s outage at 5,000 events/s (growth < 50 MiB)",
            f"{peak_during - rss_before:+.1f} MiB",
            bounded if not ctx.quick else None,
        )
    )
    section.targets.append(
        Target(
            "a log call never waits on the network (no socket operation in the logging thread)",
            f"{sockets} socket operations; worst-second max {max_during:.0f} us",
            sockets == 0,
        )
    )
    section.targets.append(
        Target(
            "nothing lost: every logged event reaches Kafka after the outage (at least once)",
            f"{distinct:,} distinct of {logged:,}",
            distinct >= logged,
        )
    )
    if plotted:
        section.images.append("img/memory_outage.png")
    else:
        section.notes.append("matplotlib is not installed: no plot.")
    section.notes.append(
        "The application is a separate process; its RSS, plus that of logpipe's exporter child process (the "
        "Kafka exporter runs in one by default), is sampled from outside every 0.25 s. The log call runs "
        "under an audit hook that counts socket events raised in the logging thread (it costs the call a little). "
        "The outage is `scripts/kafka.sh stop` of a broker started for this workload (port "
        f"{PORT}), then `start` again; records the exporter cannot deliver go to the spool and are replayed."
    )
    typical_normal = median(r["max_us"] for r in per_second if r["t"] < t_out)
    typical_down = median(r["max_us"] for r in per_second if t_out + 3 <= r["t"] < t_back)
    section.notes.append(
        f"**Reading the plot.** Memory is flat through the outage: the queue is bounded and the exporter fails fast "
        f"while the broker is down, so records stream to the spool on disk instead of piling up. The slowest call "
        f"of a second is typically {typical_down:,.0f} us while the broker is down and {typical_normal:,.0f} us "
        f"while it is up (medians over seconds): with the broker up, kafka-python's sender thread and logpipe's "
        f"worker run Python code that holds the GIL for up to the 5 ms switch interval, and a log call that needs "
        f"the GIL then waits. The per-second p99 is higher than workload 1's because this application logs in "
        f"10 ms ticks and the first call after each sleep runs on cold caches, as it would for any logger."
    )
    if errors:
        section.notes.append("The application said on stderr: `" + " | ".join(errors[-6:])[:800] + "`")
    section.extra = {
        "samples": samples,
        "per_second": per_second,
        "events": events,
        "final": final,
        "in_topic": in_topic,
        "distinct": distinct,
    }
    section.seconds = time.perf_counter() - started
    return section


def plot(
    samples: list[tuple[float, float]],
    per_second: list[dict[str, Any]],
    t_out: float,
    t_back: float,
    path: Path,
    rate: int,
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ax1.plot([t for t, _ in samples], [m for _, m in samples], color="tab:blue", lw=1.5, label="RSS")
    ax1.axvspan(t_out, t_back, color="tab:red", alpha=0.12, label="broker down")
    ax1.set_ylabel("RSS (MiB)")
    ax1.set_ylim(bottom=0)
    ax1.legend(loc="lower right")
    ax1.set_title(f"Application logging {rate:,} events/s through logpipe -> Kafka, spill to spool")
    ax1.grid(alpha=0.3)
    ts = [r["t"] for r in per_second]
    ax2.plot(ts, [r["max_us"] for r in per_second], color="tab:orange", lw=1, label="max log call (per second)")
    ax2.plot(ts, [r["p99_us"] for r in per_second], color="tab:green", lw=1, label="p99 log call (per second)")
    ax2.axvspan(t_out, t_back, color="tab:red", alpha=0.12)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (us)")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="upper right", fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("child")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--rate", type=int, default=5000)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--spool", required=True)
    c.add_argument("--drain", type=float, default=120)
    c.add_argument("--exporter", default="kafka", help="kafka, or memory to isolate the chain (diagnosis)")
    c.add_argument("--no-audit", dest="audit", action="store_false", help="no socket audit hook (diagnosis)")
    sys.exit(child(parser.parse_args()))


def tree_rss(ps: Any) -> int:
    """RSS of the application plus its child processes (logpipe's exporter child): what the app costs."""
    import psutil

    total = ps.memory_info().rss
    for child in ps.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return int(total)
