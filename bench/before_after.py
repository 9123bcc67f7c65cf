"""Workload: before/after of the librdkafka work, for the tail and the Kafka exporter, side by side.

"Before" is main as it was when that work began (`BASE`: kafka-python only,
the exporter in a child process), exported with ``git archive`` and run from
its own ``src/`` with the same interpreter and libraries; "after" is the
working tree, once on kafka-python (``LOGPIPE_KAFKA_CLIENT=kafka-python``,
the code's own changes) and once with its default client (confluent-kafka
when installed: librdkafka, in the application's process). All three run in
the same rounds, in rotating order, against the same broker and data:

* **tail**: ``logpipe tail --once`` of one file of N KafkaLog lines to a
  fresh topic, from launch to exit (every line acknowledged: start-up
  included, as a user running it sees it); CPU of the command and every
  process it started, peak RSS of its tree, records on the topic.
* **log calls**: an application process makes N structlog calls through
  ``logpipe.processors(exporter="kafka")`` (acks=all, back-pressure instead
  of the spool so every record goes to Kafka) and flushes; timed from the
  first call to the last acknowledgement, with the process's CPU (and its
  exporter child's) per event.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from . import peers
from .common import (
    KAFKA_BOOTSTRAP,
    REPO,
    Context,
    Section,
    Skip,
    Target,
    create_topic,
    fmt_num,
    median,
    require_kafka,
    require_module,
    spread,
    unique,
    unpack_revision,
)
from .kafka_throughput import make_records

KEY = "before_after"
TITLE = "11. Before/after: the tail and the exporter, before the librdkafka work and now"

#: main before the librdkafka path (confluent-kafka producer, in-process exporter, tail hot path).
BASE = "0837c97"
PARTITIONS = 3
RECORD_SIZE = 345

#: Variant -> (label, source root or None for the working tree, extra environment).
VARIANTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "before": (f"before ({BASE}): kafka-python, exporter in a child process", "base", {}),
    "after-kafka-python": (
        "now, LOGPIPE_KAFKA_CLIENT=kafka-python (exporter in a child process)",
        "tree",
        {"LOGPIPE_KAFKA_CLIENT": "kafka-python"},
    ),
    "after": ("now, default client (confluent-kafka, in process)", "tree", {}),
}

#: The application of the log-call rows: argv = src bootstrap topic n; prints its figures as JSON.
APP = textwrap.dedent(
    """
    import json, logging, os, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    import structlog, logpipe
    bootstrap, topic, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    pipeline = logpipe.configure(
        exporter="kafka",
        exporter_options={"kafka": {"bootstrap_servers": bootstrap, "topic": topic, "acks": "all"}},
        fallback_exporter="none",
        overflow="block",
        block_timeout=120.0,
        service="bench",
    )
    sink = open(os.devnull, "wb")
    log = structlog.wrap_logger(
        structlog.BytesLogger(sink),
        processors=pipeline.processors(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    pad = "x" * 120
    log.info("order placed", order_id=-1, user="alice", amount=42.5, note=pad)
    pipeline.force_flush(30)  # client made, metadata fetched: untimed

    def cpu():
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    for i in range(n):
        log.info("order placed", order_id=i, user="alice", amount=42.5, note=pad)
    pipeline.force_flush(300)
    seconds, own = time.perf_counter() - t0, cpu() - c0
    stats = list(pipeline.stats().values())[0]
    pipeline.shutdown(30)
    print(json.dumps({"seconds": seconds, "cpu_app": own, "sent": stats.sent - 1}))
    """
)


def _revision_src(workdir: Path) -> Path | None:
    """``src/`` of `BASE`, unpacked under *workdir*; None when this clone does not have it."""
    return unpack_revision(BASE, workdir, f"rev-{BASE}")


def _command(src: Path) -> list[str]:
    """``logpipe`` from *src*: the same interpreter, *src* first on the path."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(src)!r}); from logpipe.cli import main; main()"]


def _env(src: Path, extra: dict[str, str], work: Path) -> dict[str, str]:
    """No inherited ``LOGPIPE_*``; *src* on ``PYTHONPATH``, so the exporter's child process runs the same code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH", "")]))
    return {**env, "LOGPIPE_KAFKA_ACKS": "all", "LOGPIPE_TAIL_DEAD_LETTER": str(work / "dead.jsonl"), **extra}


def run_tail(src: Path, extra: dict[str, str], path: Path, n: int, work: Path) -> dict[str, Any]:
    topic = unique("bench-ba-tail")
    create_topic(topic, PARTITIONS)
    cmd = [*_command(src), "tail", "--once", "-q", "--registry", str(work / "registry.json")]
    cmd += ["-b", KAFKA_BOOTSTRAP, "-t", topic, str(path)]
    watched = peers.Watched(cmd, env=_env(src, extra, work))
    usage = watched.finish(600)
    if usage.returncode:
        raise RuntimeError(f"logpipe tail exited {usage.returncode}: {' | '.join(watched.stderr[-3:])}")
    delivered = peers.topic_end(topic, PARTITIONS)
    return {"wall": usage.wall, "cpu": usage.cpu, "rss": usage.peak_rss, "delivered": delivered, "rate": n / usage.wall}


def run_calls(src: Path, extra: dict[str, str], n: int, work: Path) -> dict[str, Any]:
    topic = unique("bench-ba-calls")
    create_topic(topic, PARTITIONS)
    script = work / "app.py"
    script.write_text(APP)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, str(script), str(src), KAFKA_BOOTSTRAP, topic, str(n)],
        env=_env(src, extra, work),
        capture_output=True,
        text=True,
        timeout=600,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"application exited {done.returncode}: {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    delivered = peers.topic_end(topic, PARTITIONS) - 1
    return {
        "rate": n / figures["seconds"],
        "cpu_app": figures["cpu_app"],
        "cpu_total": cpu,  # the whole process and its exporter child, start-up included
        "delivered": delivered,
    }


def run(ctx: Context) -> Section:
    started = time.perf_counter()
    require_kafka()
    require_module("confluent_kafka", "confluent-kafka")
    require_module("psutil")
    n_tail, n_calls, rounds = (20_000, 10_000, 1) if ctx.quick else (200_000, 100_000, 3)
    section = Section(
        key=KEY,
        title=TITLE,
        columns=["workload", "variant", "rate", "spread", "vs before", "CPU", "peak RSS", "delivered"],
        quick=ctx.quick,
    )
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-ba-") as tmp:
        work = Path(tmp)
        base = _revision_src(work)
        if base is None:
            raise Skip(f"revision {BASE} is not in this clone (a shallow clone?): nothing to compare with")
        roots = {"base": base, "tree": REPO / "src"}
        path = work / "app.jsonl"
        with path.open("wb") as out:
            for r in make_records(n_tail, size=RECORD_SIZE):
                out.write(r.payload + b"\n")
        tails: dict[str, list[dict[str, Any]]] = {k: [] for k in VARIANTS}
        calls: dict[str, list[dict[str, Any]]] = {k: [] for k in VARIANTS}
        order = list(VARIANTS)
        for r in range(rounds):
            for key in order[r % len(order) :] + order[: r % len(order)]:
                _label, root, extra = VARIANTS[key]
                one = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=tmp))
                ctx.say(f"{KEY}: round {r + 1}/{rounds}, {key}")
                tails[key].append(run_tail(roots[root], extra, path, n_tail, one))
                calls[key].append(run_calls(roots[root], extra, n_calls, one))
    _table(section, "tail --once, lines/s (launch to exit)", tails, n_tail, "cpu", "us/line")
    _table(section, "log calls -> Kafka, events/s (acks=all)", calls, n_calls, "cpu_app", "us/event")
    _targets(section, tails, calls)
    section.notes.append(
        f"{n_tail:,} KafkaLog lines of about {RECORD_SIZE} bytes for the tail, {n_calls:,} log calls for the "
        f"application, {rounds} round(s) per variant in rotating order, a fresh {PARTITIONS}-partition topic per "
        "run; rates are medians over rounds, `vs before` the median of per-round ratios. The tail's CPU is its "
        "process tree's (`wait4`), per line, start-up included; the application's is its own process's CPU from "
        "the first timed call to the flush, per event (with kafka-python the exporter's child process works "
        "besides: see the CPU column of workload 1 for the whole machine's cost per event)."
    )
    section.extra = {"base": BASE, "tail": tails, "calls": calls}
    section.seconds = time.perf_counter() - started
    return section


def _table(
    section: Section, workload: str, runs: dict[str, list[dict[str, Any]]], n: int, cpu_key: str, unit: str
) -> None:
    before = runs["before"]
    for key, rs in runs.items():
        ratio = median([x["rate"] / b["rate"] for x, b in zip(rs, before, strict=True)])
        rss = [x["rss"] for x in rs if x.get("rss")]
        section.rows.append(
            {
                "workload": workload,
                "variant": VARIANTS[key][0],
                "rate": fmt_num(median(x["rate"] for x in rs)),
                "spread": spread(x["rate"] for x in rs),
                "vs before": f"{ratio:.2f}x",
                "CPU": f"{fmt_num(median(x[cpu_key] for x in rs) / n * 1e6)} {unit}",
                "peak RSS": peers.rss_mib(int(median(rss))) if rss else "-",
                "delivered": f"{min(x['delivered'] for x in rs):,}/{n:,}",
            }
        )


def _targets(section: Section, tails: dict[str, list[dict[str, Any]]], calls: dict[str, list[dict[str, Any]]]) -> None:
    for name, runs in (("tail --once", tails), ("log calls -> Kafka", calls)):
        ratio = median([a["rate"] / b["rate"] for a, b in zip(runs["after"], runs["before"], strict=True)])
        section.targets.append(
            Target(
                f"{name}: faster now than before the librdkafka work (default client)",
                f"{ratio:.2f}x",
                ratio > 1.0,
            )
        )
