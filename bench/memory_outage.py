"""Workload 5: memory of an application logging through a broker outage, with each Kafka client.

An application process (this module's ``child`` mode) logs 5,000 events/s
through ``logpipe.processors(exporter="kafka")`` with the spill policy and the
spool fallback, paced in 10 ms ticks. The parent samples its RSS every
0.25 s (psutil, from outside) while it stops the broker for 60 s and starts
it again; afterwards the spool replays into Kafka. The outage uses a broker
of its own (``scripts/kafka.sh`` with another port and state directory), so
the shared broker other work uses is never stopped.

The run is made once per client library, one after the other, with the same
phases and rate, each against a freshly started broker: ``confluent-kafka``
(the exporter runs in the application's process under
``LOGPIPE_ISOLATION=auto``) and ``kafka-python`` (it runs in a child process,
whose RSS counts as the application's). The client is chosen with
``LOGPIPE_KAFKA_CLIENT`` in the application's environment, and the report
records which one the application's logpipe says it ran, and where, rather
than assuming it.

Reported per client: RSS before, peak during and after the outage, the
growth, the log call's latency (p99 and max, per second), what went where
(sent, spilled to the spool, replayed, lost), every event counted in the
topic at the end, and the number of socket operations the logging thread
made (an audit hook: ``socket.connect``, ``getaddrinfo`` ...; it must be 0,
the network is only touched by background threads). The curves are a plot in
docs/img/.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
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
TITLE = "5. Memory through a 60 s broker outage (spill policy), per Kafka client"
PORT = int(os.environ.get("LOGPIPE_BENCH_OUTAGE_KAFKA_PORT", "29092"))
STATE = REPO / ".services" / "bench-outage"
RATE = 5000

#: The Kafka exporter's client libraries, in run order, with the module each needs.
CLIENTS = {"confluent-kafka": "confluent_kafka", "kafka-python": "kafka"}

#: Where ``LOGPIPE_ISOLATION=auto`` puts each client's exporter (what the report expects to see).
EXPECTED_PLACE = {"confluent-kafka": "application's process", "kafka-python": "child process"}

#: Plot colour of each client.
COLOURS = {"confluent-kafka": "tab:blue", "kafka-python": "tab:purple"}


# -- the application ------------------------------------------------------------------------


def identity(dispatcher: Any) -> dict[str, Any]:
    """Which client the exporter runs and where, as the application's own logpipe says.

    The report must not trust the environment it set: ``auto`` choices, a
    missing library or a child that cannot start change what actually runs.
    """
    exporter = dispatcher.exporter
    inner = getattr(exporter, "inner", exporter)
    described = exporter.describe()
    child = type(exporter).__name__ == "ProcessExporter" and "in a child process" in described
    return {
        "client": getattr(inner, "client", None),
        "exporter": described,
        "place": "child process" if child else "application's process",
        # Client modules loaded in the application's process: kafka-python's must not be when it runs in a child.
        "modules": [m for m in CLIENTS.values() if m in sys.modules],
        "threads": sorted(t.name for t in threading.enumerate()),
    }


def as_dict(stats: Any) -> dict[str, Any] | None:
    """A stats dataclass (the dispatcher's, the spool's, the exporter's) as JSON-ready data."""
    if stats is None:
        return None
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    return dict(vars(stats))


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
    print(json.dumps({"ready": True, **identity(dispatcher)}), flush=True)
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
        # no log calls now, but the replay's progress still tells when it started after the outage
        print(json.dumps({"drain_t": round(time.monotonic() - start, 3), "replayed": sp.replayed}), flush=True)
        time.sleep(0.5)
    pipeline.force_flush(30)
    sp = spool.stats() if hasattr(spool, "stats") else None
    print(
        json.dumps(
            {
                "final": True,
                "logged": logged,
                "stats": as_dict(dispatcher.stats()),
                "spool": as_dict(sp),
                "exporter_stats": as_dict(getattr(dispatcher.exporter, "stats", lambda: None)()),
                "who": identity(dispatcher),
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
        "LOGPIPE_SERVICES_KAFKA_SECURE": "0",  # plaintext only: no extra listeners next to the shared broker's
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


def unique_ids(bootstrap: str, topic: str, timeout: float = 300.0) -> int:
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


@dataclass
class Outage:
    """One client's outage run: what the application reported and what the parent saw from outside."""

    client: str
    #: (seconds since the application was ready, RSS of the application, RSS of its child processes) in MiB.
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    per_second: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, float]] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    in_topic: int = 0
    distinct: int = 0
    #: Most OS threads the application's process had (librdkafka's are C threads, invisible to `threading`).
    threads: int = 0
    #: (seconds, records replayed so far) whenever the application reported a replay under way.
    replay: list[tuple[float, int]] = field(default_factory=list)
    #: Command lines of the application's child processes (logpipe's exporter child, if any).
    children: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: The machine's 1-minute load average when the application started (other work competes for the cores).
    load: float = float("nan")


def outage_run(ctx: Context, client: str, phases: tuple[int, int, int]) -> Outage:
    """Start the private broker, run the application with *client*, take the broker down and up, count."""
    import shutil
    import tempfile

    import psutil

    before, outage, after = phases
    bootstrap = f"127.0.0.1:{PORT}"
    ctx.say(f"memory_outage [{client}]: starting a broker of its own on {bootstrap}")
    broker("start")
    result = Outage(client)
    topic = unique("bench-outage")
    spool_dir = Path(tempfile.mkdtemp(prefix="logpipe-bench-spool-"))
    proc: subprocess.Popen[str] | None = None
    try:
        from .common import create_topic

        create_topic(topic, bootstrap=bootstrap)
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
            str(RATE),
            "--duration",
            str(before + outage + after),
            "--spool",
            str(spool_dir),
            "--drain",
            "120",
        ]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "LOGPIPE_KAFKA_CLIENT": client,
            "LOGPIPE_ISOLATION": "auto",  # each client where logpipe puts it by default
        }
        result.load = os.getloadavg()[0]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=spool_dir)
        reports: list[dict[str, Any]] = []
        readers = start_readers(proc, reports, result.errors)
        while not reports:
            if proc.poll() is not None:
                raise RuntimeError("the application exited early: " + " | ".join(result.errors[-5:]))
            time.sleep(0.05)
        result.ready = reports[0]
        ps = psutil.Process(proc.pid)
        t0 = time.monotonic()
        stopped = restarted = False
        while proc.poll() is None:
            now = time.monotonic() - t0
            try:
                app, kids = ps.memory_info().rss, children_rss(ps, result.children)
                result.threads = max(result.threads, ps.num_threads())
            except psutil.Error:
                break
            if app == 0:  # exited and not reaped yet: a zombie has no memory, not a drop to 0
                break
            result.samples.append((now, app / 2**20, kids / 2**20))
            if not stopped and now >= before:
                stopped = True
                ctx.say(f"memory_outage [{client}]: stopping the broker")
                result.events.append(("outage", time.monotonic() - t0))
                broker("stop")
                result.events.append(("down", time.monotonic() - t0))
            if stopped and not restarted and now >= before + outage:
                restarted = True
                ctx.say(f"memory_outage [{client}]: starting the broker again")
                result.events.append(("restart", time.monotonic() - t0))
                threading.Thread(
                    target=lambda: (broker("start"), result.events.append(("up", time.monotonic() - t0))),
                    daemon=True,
                ).start()
            time.sleep(0.25)
        proc.wait(300)
        for t in readers:
            t.join(10)
        final = next((r for r in reports if r.get("final")), None)
        if final is None:
            raise RuntimeError("the application gave no final report: " + " | ".join(result.errors[-5:]))
        result.final = final
        result.per_second = [r for r in reports if "t" in r]
        result.replay = [(r.get("t", r.get("drain_t", 0.0)), r["replayed"]) for r in reports if r.get("replayed")]
        ctx.say(f"memory_outage [{client}]: counting what reached the topic")
        result.in_topic = topic_count(bootstrap, topic)
        result.distinct = unique_ids(bootstrap, topic)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        broker("wipe")  # stop, and delete its data: each run writes ~1 GB; the next client gets a fresh broker
        shutil.rmtree(spool_dir, ignore_errors=True)
    return result


def start_readers(proc: subprocess.Popen[str], reports: list[dict[str, Any]], errors: list[str]) -> list[Any]:
    """Threads collecting the application's JSON lines (stdout) and anything it says on stderr."""

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
    return threads


def children_rss(ps: Any, seen: list[str]) -> int:
    """RSS of the application's child processes (logpipe's exporter child): part of what the app costs.

    Their command lines are added to *seen*, so the report can say what ran beside the application.
    """
    import psutil

    total = 0
    for kid in ps.children(recursive=True):
        try:
            total += kid.memory_info().rss
            line = " ".join(kid.cmdline())
        except psutil.Error:
            continue
        if line not in seen:
            seen.append(line)
    return int(total)


# -- figures ---------------------------------------------------------------------------------------


def figures(run: Outage, phases: tuple[int, int, int]) -> dict[str, Any]:
    """The figures of one client's run, judged against the outage as the parent timed it."""
    before, outage, after = phases
    t_out = next((t for name, t in run.events if name == "outage"), float(before))
    t_back = next((t for name, t in run.events if name == "restart"), float(before + outage))
    total = [(t, app + kids) for t, app, kids in run.samples]
    pre = [m for t, m in total if t_out - 10 <= t < t_out] or [m for t, m in total if t < t_out]
    during = [m for t, m in total if t_out <= t < t_back]
    post = [m for t, m in total if t >= t_back]
    per_second = run.per_second
    rss_before = max(pre) if pre else float("nan")
    logged = run.final["logged"]
    return {
        "t_out": t_out,
        "t_back": t_back,
        "rss_before": rss_before,
        "peak_during": max(during) if during else float("nan"),
        "peak_after": max(post) if post else float("nan"),
        "app_before": max((app for t, app, _ in run.samples if t_out - 10 <= t < t_out), default=float("nan")),
        "children_before": max((k for t, _, k in run.samples if t_out - 10 <= t < t_out), default=float("nan")),
        "p99_during": max((r["p99_us"] for r in per_second if t_out <= r["t"] < t_back), default=float("nan")),
        "max_during": max((r["max_us"] for r in per_second if t_out <= r["t"] < t_back), default=float("nan")),
        "p99_normal": max((r["p99_us"] for r in per_second if r["t"] < t_out), default=float("nan")),
        "typical_normal": median(r["max_us"] for r in per_second if r["t"] < t_out),
        "typical_down": median(r["max_us"] for r in per_second if t_out + 3 <= r["t"] < t_back),
        "logged": logged,
        "achieved": logged / (before + outage + after),
        "sockets": sum(run.final["socket_ops_in_log_calls"].values()),
        "stats": run.final["stats"],
        "spool": run.final.get("spool") or {},
        "who": run.final.get("who") or run.ready,
        "replay_started": replay_started(run),
    }


def replay_started(run: Outage) -> float | None:
    """Seconds from the broker answering again to the spool's first replayed record (None: not seen).

    The spool replays in bursts after a backoff; how soon the first one
    follows the broker's return says whether its retries are waiting on stale failures.
    """
    up = next((t for name, t in run.events if name == "up"), None)
    if up is None:
        return None
    # records spilled before the outage (a full queue) may have been replayed already: count from the return
    before = max((n for t, n in run.replay if t <= up), default=0)
    return next((t - up for t, n in run.replay if t > up and n > before), None)


def rows_of(run: Outage, fig: dict[str, Any]) -> list[tuple[str, str]]:
    """(measure, value) rows of one client's run, in report order."""
    who, stats, spool = fig["who"], fig["stats"], fig["spool"]
    kids = len(run.children)
    return [
        ("client that ran (the application's exporter describes itself)", who["exporter"]),
        ("the application's process holds", holds(who, run.threads)),
        ("child processes (RSS included)", "; ".join([str(kids), *(short(c) for c in run.children)])),
        ("load average when the application started", f"{run.load:.1f} on {os.cpu_count()} cores"),
        ("events logged", f"{fig['logged']:,} ({fig['achieved']:,.0f}/s)"),
        ("RSS before the outage (max of last 10 s)", rss_split(fig)),
        ("RSS peak during the outage", f"{fig['peak_during']:.1f} MiB"),
        ("RSS peak after the outage (replay)", f"{fig['peak_after']:.1f} MiB"),
        ("growth during the outage", f"{fig['peak_during'] - fig['rss_before']:+.1f} MiB"),
        (
            "log call p99 / max during the outage (worst second)",
            f"{fig['p99_during']:.0f} us / {fig['max_during']:.0f} us",
        ),
        ("log call p99 before the outage (worst second)", f"{fig['p99_normal']:.0f} us"),
        (
            "socket operations made by the logging thread",
            f"{fig['sockets']} {run.final['socket_ops_in_log_calls'] or ''}".strip(),
        ),
        (
            "sent / spilled / failed / dropped",
            f"{stats['sent']:,} / {stats['spilled']:,} / {stats['failed']:,} / {stats['dropped']:,}",
        ),
        (
            "spool: written / replayed / pending bytes",
            f"{spool.get('written', 0):,} / {spool.get('replayed', 0):,} / {spool.get('pending_bytes', 0):,}",
        ),
        ("spool replay began, after the broker was up again", seconds(fig["replay_started"])),
        ("messages in the topic / distinct ids", f"{run.in_topic:,} / {run.distinct:,} (of {fig['logged']:,})"),
    ]


def holds(who: dict[str, Any], threads: int) -> str:
    """What the application's process contains, from what it reported (the exporter or not, client modules)."""
    parts = "chain, queue, worker, spool" + ("" if who["place"] == "child process" else ", Kafka exporter")
    modules = ", ".join(who["modules"]) or "none"
    return f"{parts}; client modules loaded: {modules}; up to {threads} OS threads"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def short(command: str) -> str:
    """A child's command line, shortened to what it runs (``python -c CODE`` -> the code)."""
    _, flag, code = command.partition(" -c ")
    return (code if flag else command)[:70]


def rss_split(fig: dict[str, Any]) -> str:
    """The RSS before the outage, split into the application and its exporter child when there is one."""
    text = f"{fig['rss_before']:.1f} MiB"
    if fig["children_before"] > 0:
        text += f" (application {fig['app_before']:.1f} + child {fig['children_before']:.1f})"
    return text


def targets_of(client: str, run: Outage | None, fig: dict[str, Any] | None, why: str, quick: bool) -> list[Target]:
    """The workload's three targets for one client; a run that did not happen is not judged (or missed)."""
    texts = [
        f"memory stays bounded through a 60 s outage at 5,000 events/s (growth < 50 MiB) ({client})",
        f"a log call never waits on the network (no socket operation in the logging thread) ({client})",
        f"nothing lost: every logged event reaches Kafka after the outage (at least once) ({client})",
    ]
    if run is None or fig is None:
        verdict = None if why.startswith("not installed") else False
        return [Target(text, why, verdict) for text in texts]
    growth = fig["peak_during"] - fig["rss_before"]
    bounded = growth < 50 and fig["peak_after"] - fig["rss_before"] < 80
    return [
        Target(texts[0], f"{growth:+.1f} MiB", bounded if not quick else None),
        Target(
            texts[1],
            f"{fig['sockets']} socket operations; worst-second max {fig['max_during']:.0f} us",
            fig["sockets"] == 0,
        ),
        Target(texts[2], f"{run.distinct:,} distinct of {fig['logged']:,}", run.distinct >= fig["logged"]),
    ]


# -- the section -------------------------------------------------------------------------------


def run(ctx: Context) -> Section:
    require_module("psutil", "psutil")
    if not (exporter_available("kafka") and exporter_available("spool")):
        raise Skip("logpipe's kafka and spool exporters are not both registered yet")
    import shutil

    if shutil.which("java") is None:
        raise Skip("java not found: the outage needs a broker of its own (scripts/kafka.sh)")
    require_module("kafka", "kafka-python")  # the parent counts the topic with it
    phases = (5, 10, 10) if ctx.quick else (20, 60, 40)
    started = time.perf_counter()
    runs: dict[str, Outage] = {}
    why: dict[str, str] = {}
    for client, module in CLIENTS.items():
        if importlib.util.find_spec(module) is None:
            why[client] = f"not installed (no {module} module)"
            continue
        try:
            runs[client] = outage_run(ctx, client, phases)
        except Exception as exc:  # one client's failure must not lose the other's figures
            traceback.print_exc()
            why[client] = f"failed: {type(exc).__name__}: {exc}"
    if not runs:
        raise RuntimeError("; ".join(f"{c}: {w}" for c, w in why.items()))
    figs = {client: figures(r, phases) for client, r in runs.items()}

    section = Section(key=KEY, title=TITLE, columns=["measure", *CLIENTS], quick=ctx.quick)
    measures: list[str] = []
    values: dict[str, dict[str, str]] = {}
    for client, r in runs.items():
        for measure, value in rows_of(r, figs[client]):
            if measure not in measures:
                measures.append(measure)
            values.setdefault(measure, {})[client] = value
    section.rows.append(
        {
            "measure": "phases (same for both runs)",
            **{c: f"{phases[0]} s normal, {phases[1]} s broker down, {phases[2]} s after" for c in CLIENTS},
        }
    )
    for measure in measures:
        section.rows.append({"measure": measure, **{c: values[measure].get(c, why.get(c, "-")) for c in CLIENTS}})
    for client in CLIENTS:
        section.targets += targets_of(client, runs.get(client), figs.get(client), why.get(client, ""), ctx.quick)

    image = ctx.docs / "img" / "memory_outage.png"
    if plot(runs, figs, image):
        section.images.append("img/memory_outage.png")
    else:
        section.notes.append("matplotlib is not installed: no plot.")
    section.notes += notes(runs, figs, why)
    section.extra = {
        client: {
            "samples": r.samples,
            "per_second": r.per_second,
            "events": r.events,
            "ready": r.ready,
            "final": r.final,
            "replay": r.replay,
            "in_topic": r.in_topic,
            "distinct": r.distinct,
            "threads": r.threads,
            "load": r.load,
            "children": r.children,
        }
        for client, r in runs.items()
    }
    section.seconds = time.perf_counter() - started
    return section


def notes(runs: dict[str, Outage], figs: dict[str, dict[str, Any]], why: dict[str, str]) -> list[str]:
    """The prose under the table: which client is which, what the application's process holds, the plot."""
    out = [
        "Two runs, one per client library, one after the other with the same phases and rate, each against a "
        f"freshly started broker of its own (`scripts/kafka.sh` on port {PORT}; `stop` for the outage, then "
        "`start` again). The application gets `LOGPIPE_KAFKA_CLIENT=<client>` and `LOGPIPE_ISOLATION=auto` in "
        "its environment; the first row is what its logpipe then reports (the exporter's `describe()`), not "
        "what was asked for. Its RSS, plus that of any child process it has, is sampled from outside every "
        "0.25 s. The log call runs under an audit hook that counts socket events raised in the logging thread "
        "(it costs the call a little). Records the exporter cannot deliver go to the spool and are replayed.",
        "**confluent-kafka**: the exporter runs in the application's process (librdkafka's sender threads are C "
        "threads that do not hold the GIL). That one process holds the structlog chain, logpipe's queue and "
        "worker thread, the spool, and librdkafka's producer with its threads and buffers: the RSS is that "
        "process alone. **kafka-python**: the exporter runs in a child process (pure Python: its sender thread "
        "would compete with the application for the GIL). The application's process holds the chain, the "
        "queue, the worker that pipes batches to the child, and the spool (replay also goes through the "
        "child); the RSS is the application's plus the child's.",
    ]
    for client in runs:
        asked, who = client, figs[client]["who"]
        if who.get("client") != asked or who.get("place") != EXPECTED_PLACE[client]:
            out.append(
                f"**Warning ({client})**: asked for {asked} ({EXPECTED_PLACE[client]}), the application ran "
                f"{who.get('client')} in the {who.get('place')}: `{who.get('exporter')}`."
            )
    spans = []
    growths = []
    for client, f in figs.items():
        spans.append(
            f"with {client}, typically {f['typical_down']:,.0f} us while the broker is down and "
            f"{f['typical_normal']:,.0f} us while it is up"
        )
        growths.append(f"{f['peak_during'] - f['rss_before']:+.1f} MiB with {client}")
    if spans:
        flat = all(f["peak_during"] - f["rss_before"] < 50 for f in figs.values())
        memory = (
            "Memory stays flat through the outage (" + ", ".join(growths) + "): the queue is bounded and the "
            "exporter fails fast while the broker is down, so records stream to the spool on disk instead of "
            "piling up in the client."
            if flat
            else "Memory grows through the outage (" + ", ".join(growths) + "): see the targets."
        )
        out.append(
            "**Reading the plot.** " + memory + " The slowest call of a "
            "second (medians over seconds) is " + "; ".join(spans) + ". With the broker up, logpipe's worker "
            "(and, with confluent-kafka, the delivery reports it serves) runs Python code in the application's "
            "process, and a log call that needs the GIL meanwhile waits up to the 5 ms switch interval. The "
            "machine's load average is in the table: above its number of cores, the slowest call of a second "
            "mostly measures waiting for a core, and an exporter that gets too little CPU falls behind: the "
            "application's queue fills up to its bound (`LOGPIPE_QUEUE_SIZE`), which shows in its RSS. The "
            "per-second p99 is higher than workload 1's because this application logs in 10 ms ticks and the "
            "first call after each sleep runs on cold caches, as it would for any logger."
        )
    for client, reason in why.items():
        out.append(f"**{client}** did not run: {reason}")
    for client, r in runs.items():
        if r.errors:
            out.append(f"The application ({client}) said on stderr: `" + " | ".join(r.errors[-6:])[:800] + "`")
    return out


def plot(runs: dict[str, Outage], figs: dict[str, dict[str, Any]], path: Path) -> bool:
    """RSS and per-second log-call latency of every client's run, on one time axis."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for client, r in runs.items():
        colour = COLOURS.get(client, "tab:gray")
        f = figs[client]
        ts = [t for t, _, _ in r.samples]
        ax1.plot(ts, [a + k for _, a, k in r.samples], color=colour, lw=1.5, label=f"RSS, {client}")
        if any(k > 0 for _, _, k in r.samples):
            ax1.plot(
                ts, [a for _, a, _ in r.samples], color=colour, lw=1, ls=":", label=f"RSS, {client}: application alone"
            )
        ax1.axvspan(f["t_out"], f["t_back"], color="tab:red", alpha=0.07)
        ax2.axvspan(f["t_out"], f["t_back"], color="tab:red", alpha=0.07)
        secs = [p["t"] for p in r.per_second]
        ax2.plot(secs, [p["max_us"] for p in r.per_second], color=colour, lw=1, label=f"max, {client}")
        ax2.plot(secs, [p["p99_us"] for p in r.per_second], color=colour, lw=0.8, ls="--", label=f"p99, {client}")
    ax1.set_ylabel("RSS (MiB)")
    ax1.set_ylim(bottom=0)
    ax1.legend(loc="lower right", fontsize=8)
    ax1.set_title(f"Application logging {RATE:,} events/s through logpipe -> Kafka (shaded: broker down)")
    ax1.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax2.set_ylabel("log call per second (us)")
    ax2.set_xlabel("seconds since the application started logging")
    ax2.legend(loc="upper right", fontsize=7, ncol=2)
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
    c.add_argument("--rate", type=int, default=RATE)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--spool", required=True)
    c.add_argument("--drain", type=float, default=120)
    c.add_argument("--exporter", default="kafka", help="kafka, or memory to isolate the chain (diagnosis)")
    c.add_argument("--no-audit", dest="audit", action="store_false", help="no socket audit hook (diagnosis)")
    sys.exit(child(parser.parse_args()))
