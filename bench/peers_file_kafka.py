"""Workload: file -> Kafka, ``logpipe tail --once`` beside the C tools people run instead.

The same JSON Lines file of N KafkaLog records (about 344 bytes, what
logpipe's file exporter writes) goes to a fresh 3-partition topic of the same
broker, acks=all, one message per line, in rotating rounds:

* **logpipe tail --once**: the real command, as a subprocess, as a user
  runs it: confluent-kafka is installed (this workload requires it), so
  ``LOGPIPE_KAFKA_CLIENT=auto`` picks it and ``LOGPIPE_TAIL_ISOLATION=auto``
  runs the exporter in the tailer's own process (librdkafka's threads are C
  threads); no child process.
* **kcat** (librdkafka's CLI, Debian ``kcat``): ``kcat -P -b HOST -t TOPIC
  -X acks=all -l FILE``: the practical limit for the job.
* **rsyslog imfile -> omkafka** (Debian ``rsyslog-kafka``): ``rsyslogd -n``
  with its own work directory and a template that sends the raw line; it
  never exits by itself, so it is stopped by its pid once the topic holds N
  records.

Each is measured from launch to the last record on the topic (start-up
included, as a user running it sees it): wall time, CPU seconds of all its
processes, peak RSS of its process tree; then the topic is read back and its
records counted (total and distinct), so a peer that loses or repeats lines
shows.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import peers
from .common import (
    KAFKA_BOOTSTRAP,
    Context,
    Section,
    Skip,
    Target,
    create_topic,
    fmt_num,
    fmt_pct,
    median,
    require_kafka,
    require_module,
    spread,
    unique,
)
from .kafka_throughput import _delete_topic, make_records
from .ship_throughput import logpipe_command

KEY = "peers_file_kafka"
TITLE = "7. File -> Kafka: logpipe tail beside kcat and rsyslog"
PARTITIONS = 3
#: make_records' size argument that gives KafkaLog lines of about 344 bytes (the issue's figure).
RECORD_SIZE = 360


@dataclass
class Run:
    """One peer's run: what it cost and what arrived."""

    usage: peers.Usage
    active: float  # seconds from the first record on the topic to the last
    delivered: int
    distinct: int


class TopicWatch:
    """Polls a topic's end offsets: when the first record arrived, when N had."""

    def __init__(self, topic: str, n: int, started: float) -> None:
        self.topic, self.n, self.started = topic, n, started
        self.first: float | None = None
        self.done: float | None = None
        self.last_count = 0
        self.last_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": "logpipe-bench-watch"})
        try:
            while not self._stop.is_set():
                count = peers.topic_end(self.topic, PARTITIONS, consumer)
                now = time.perf_counter()
                if count and self.first is None:
                    self.first = now
                if count != self.last_count:
                    self.last_at = now
                self.last_count = count
                if count >= self.n:
                    self.done = now
                    return
                self._stop.wait(0.02)
        finally:
            consumer.close()

    def wait(self, timeout: float, stall: float = 20.0) -> bool:
        """Until N records arrived (True), or *timeout*, or no progress for *stall* seconds."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline and self.done is None:
            if self.last_count != last:
                last, since = self.last_count, time.monotonic()
            elif time.monotonic() - since > stall:
                break
            time.sleep(0.02)
        return self.done is not None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _finish(watched: peers.Watched, watch: TopicWatch, topic: str, n: int, *, stop: bool) -> Run:
    if stop:  # rsyslog: runs until told; stop it once everything (or all it will deliver) arrived
        watch.wait(600)
        usage = watched.finish(30, signal.SIGTERM)
    else:
        usage = watched.finish(900)
        watch.wait(10, stall=3)
    watch.stop()
    end = watch.done or watch.last_at or time.perf_counter()
    if stop:  # the wall time of a daemon ends with its last delivery, not with our signal
        usage.wall = end - watched.started
    delivered, distinct = peers.topic_count(topic, n)
    active = end - (watch.first or end)
    return Run(usage, active, delivered, distinct)


def run_tail(path: Path, topic: str, n: int, work: Path) -> Run:
    cmd = logpipe_command() + [
        "tail",
        "--once",
        "-q",
        "--registry",
        str(work / "registry.json"),
        "-b",
        KAFKA_BOOTSTRAP,
        "-t",
        topic,
        str(path),
    ]
    env = {**os.environ, "LOGPIPE_TAIL_DEAD_LETTER": str(work / "dead-letter.jsonl"), "LOGPIPE_KAFKA_ACKS": "all"}
    watched = peers.Watched(cmd, env=env)
    watch = TopicWatch(topic, n, watched.started)
    run = _finish(watched, watch, topic, n, stop=False)
    if run.usage.returncode:
        raise RuntimeError(f"logpipe tail exited {run.usage.returncode}: {' | '.join(watched.stderr[-3:])}")
    return run


def run_kcat(path: Path, topic: str, n: int, work: Path) -> Run:
    cmd = ["kcat", "-P", "-b", KAFKA_BOOTSTRAP, "-t", topic, "-X", "acks=all", "-l", str(path)]
    watched = peers.Watched(cmd)
    watch = TopicWatch(topic, n, watched.started)
    run = _finish(watched, watch, topic, n, stop=False)
    if run.usage.returncode:
        raise RuntimeError(f"kcat exited {run.usage.returncode}: {' | '.join(watched.stderr[-3:])}")
    return run


def run_rsyslog(path: Path, topic: str, n: int, work: Path) -> Run:
    rsyslog = peers.Rsyslog(peers.rsyslog_file_to_kafka(path, topic, work / "rsyslog"), work / "rsyslog")
    watch = TopicWatch(topic, n, rsyslog.watched.started)
    try:
        run = _finish(rsyslog.watched, watch, topic, n, stop=True)
    finally:
        rsyslog.watched.kill()
    if run.distinct < n:
        LOSSES.append(f"rsyslog imfile->omkafka delivered {run.distinct:,}/{n:,}: {rsyslog.log()[-300:]}")
    return run


#: What a lossy peer's own log said, for the notes.
LOSSES: list[str] = []


#: key -> (row label, Debian packages it needs, runner).
PEERS: dict[str, tuple[str, tuple[str, ...], Callable[[Path, str, int, Path], Run]]] = {
    "tail": ("logpipe tail --once (confluent-kafka, exporter in process: the default)", (), run_tail),
    "kcat": ("kcat -P -X acks=all -l FILE (librdkafka)", ("kcat",), run_kcat),
    "rsyslog": ("rsyslog imfile -> omkafka (raw line, acks=all)", ("rsyslog", "rsyslog-kafka"), run_rsyslog),
}


def run(ctx: Context) -> Section:
    started = time.perf_counter()
    require_kafka()
    require_module("confluent_kafka", "confluent-kafka")
    require_module("psutil")
    tools = peers.ensure_tools(ctx.say)
    n, rounds = (20_000, 1) if ctx.quick else (200_000, 3)
    section = Section(
        key=KEY,
        title=TITLE,
        columns=[
            "peer",
            "wall s",
            "lines/s",
            "spread (lines/s)",
            "lines/s after start-up",
            "CPU s",
            "CPU us/line",
            "peak RSS",
            "delivered (distinct)",
        ],
        quick=ctx.quick,
    )
    available: dict[str, str] = {}
    for key, (_label, packages, _fn) in PEERS.items():
        try:
            tools.require(*packages)
            available[key] = ""
        except Skip as exc:
            available[key] = str(exc)
    runs: dict[str, list[Run]] = {k: [] for k in PEERS if not available[k]}
    LOSSES.clear()
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-peers-") as tmp:
        path = Path(tmp) / "app.jsonl"
        records = make_records(n, size=RECORD_SIZE)
        size = sum(len(r.payload) for r in records) / n
        with path.open("wb") as out:
            for r in records:
                out.write(r.payload + b"\n")
        del records
        order = list(runs)
        for r in range(rounds):
            for key in order[r % len(order) :] + order[: r % len(order)]:
                topic = unique(f"bench-peer-{key}")
                create_topic(topic, PARTITIONS)
                work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=tmp))
                try:
                    one = PEERS[key][2](path, topic, n, work)
                finally:
                    _delete_topic(topic)
                runs[key].append(one)
                ctx.say(
                    f"{KEY} round {r + 1}/{rounds} {key}: {one.usage.wall:.2f} s wall, {one.usage.cpu:.2f} s CPU, "
                    f"{peers.rss_mib(one.usage.peak_rss)}, {one.distinct:,}/{n:,} distinct ({one.delivered:,} total)"
                )
    figures: dict[str, dict[str, Any]] = {}
    for key, (label, _package, _fn) in PEERS.items():
        if available[key]:
            section.rows.append({"peer": label, "key": key, "skipped": available[key]})
            continue
        rs = runs[key]
        rates = [x.distinct / x.usage.wall for x in rs]
        fig = {
            "wall": median(x.usage.wall for x in rs),
            "rate": median(rates),
            "rates": rates,
            "active_rate": median(x.distinct / x.active if x.active > 0 else float("nan") for x in rs),
            "cpu": median(x.usage.cpu for x in rs),
            "cpu_us_per_line": median(x.usage.cpu / n * 1e6 for x in rs),
            "peak_rss": max(x.usage.peak_rss for x in rs),
            "delivered": min(x.delivered for x in rs),
            "distinct": min(x.distinct for x in rs),
            "max_delivered": max(x.delivered for x in rs),
        }
        figures[key] = fig
        lost = fig["distinct"] < n
        dup = fig["max_delivered"] > fig["distinct"]
        section.rows.append(
            {
                "peer": label,
                "key": key,
                "wall s": f"{fig['wall']:.2f}",
                "lines/s": fmt_num(fig["rate"]),
                "spread (lines/s)": spread(rates),
                "lines/s after start-up": fmt_num(fig["active_rate"]),
                "CPU s": f"{fig['cpu']:.2f}",
                "CPU us/line": fmt_num(fig["cpu_us_per_line"]),
                "peak RSS": peers.rss_mib(fig["peak_rss"]),
                "delivered (distinct)": f"{fig['distinct']:,}/{n:,}"
                + (" **LOST LINES**" if lost else "")
                + (f" ({fig['max_delivered']:,} with repeats)" if dup else ""),
            }
        )
    _targets(section, figures, runs, n)
    section.notes.append(
        f"{n:,} KafkaLog lines of {size:.0f} bytes in one file, {rounds} round(s) per peer in rotating order, each "
        f"run to a fresh {PARTITIONS}-partition topic of the same broker, acks=all. Wall time runs from launching "
        "the tool to the last record on the topic (end offsets polled every 20 ms), so it includes start-up "
        "(Python's imports, for logpipe); `lines/s after start-up` runs from the first record on the topic. CPU is "
        "user + system seconds of the tool's process and every process it started (`wait4`'s rusage), peak RSS "
        "the largest sum over its process tree (sampled every 50 ms). Delivered counts the distinct records read "
        "back from the topic; rsyslog runs until stopped, so it is stopped by its pid once all lines arrived (or "
        "none came for 20 s)."
    )
    section.notes.append(tools.note())
    section.notes.extend(LOSSES)
    section.extra = {"figures": figures, "n": n, "rounds": rounds, "skipped": {k: v for k, v in available.items() if v}}
    section.seconds = time.perf_counter() - started
    return section


def _targets(section: Section, figures: dict[str, dict[str, Any]], runs: dict[str, list[Run]], n: int) -> None:
    tail = figures.get("tail")
    kcat = figures.get("kcat")
    rsys = figures.get("rsyslog")
    if tail and kcat:
        per_round = [
            a.distinct / a.usage.wall / (b.distinct / b.usage.wall)
            for a, b in zip(runs["tail"], runs["kcat"], strict=True)
        ]
        ratio = median(per_round)
        tail["ratio_kcat"] = ratio
        section.targets.append(
            Target(
                "file -> Kafka lines/s >= 80% of kcat (moonshot: >= kcat)",
                f"{fmt_pct(ratio)} of kcat ({fmt_num(tail['rate'])} vs {fmt_num(kcat['rate'])} lines/s)",
                ratio >= 0.8 and tail["distinct"] >= n,
            )
        )
    else:
        section.targets.append(Target("file -> Kafka lines/s >= 80% of kcat", "kcat not measured", None))
    if tail and rsys:
        ratio = tail["cpu_us_per_line"] / rsys["cpu_us_per_line"]
        tail["cpu_ratio_rsyslog"] = ratio
        section.targets.append(
            Target(
                "file -> Kafka CPU per line <= 3x rsyslog's",
                f"{ratio:.1f}x ({fmt_num(tail['cpu_us_per_line'])} vs {fmt_num(rsys['cpu_us_per_line'])} us/line)",
                ratio <= 3.0,
            )
        )
    else:
        section.targets.append(Target("file -> Kafka CPU per line <= 3x rsyslog's", "rsyslog not measured", None))
