"""Workload: Kafka -> Elasticsearch, ``logpipe ship`` beside rsyslog and the node's raw bulk ceiling.

N KafkaLog records (about 344 bytes) are produced once to a 3-partition topic.
Then, in rotating rounds, each peer indexes all N into fresh daily indices
made from logpipe's template (1 shard, 0 replicas), ``create`` with ``_id`` =
the record's ``Id``:

* **logpipe ship**: the real command as a subprocess, a new consumer group.
* **rsyslog imkafka -> omelasticsearch** (Debian ``rsyslog-kafka``,
  ``rsyslog-elasticsearch``): bulk mode, ``esVersion.major="8"``, a new
  consumer group; ``mmjsonparse`` reads ``Time`` and ``Id`` so the index
  (``dynSearchIndex``) and ``_id`` (``dynbulkid``, ``writeoperation="create"``)
  are logpipe's; the message is sent as it came. 2,000 messages a bulk and 4
  worker threads, the shipper's defaults.
* **raw bulk ceiling**: the same documents as pre-serialised NDJSON bodies
  at the best batch size and thread count found by ``es_ceiling`` (run
  beforehand in the same process, or searched here): the denominator.

Both shippers are measured the same way: launched, watched by polling the
indices' indexing statistics (documents created on the primaries, which
needs no refresh) every 0.25 s, stopped by SIGTERM once all N are indexed,
then counted (after a refresh). docs/s runs from the first document indexed
to the last (so start-up and joining the group are not counted); wall time
from launch. CPU and peak RSS as in ``peers_file_kafka``. The watch does not
refresh: a refresh every 0.25 s cost the node about a fifth more CPU per
document (42 -> 52 us with the ceiling's requests, 48 -> 58 us with the
shipper's, interleaved on this machine), which the ceiling, timed from its
own requests, never paid.

The machine's cores are shared: while a shipper runs, the broker serves the
topic and the shipper does its own work beside the node, while the ceiling
has the node alone with a client that only sends bytes. So every row also
says how many cores the node, the broker and the shipper (or the raw client)
used over its docs/s window (`peers.CPUProbe`; "-" when the servers'
processes are not visible from here, e.g. in containers).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import es_ceiling, peers
from .common import (
    Context,
    Section,
    Skip,
    Target,
    create_topic,
    fmt_num,
    fmt_pct,
    median,
    require_es,
    require_kafka,
    require_module,
    spread,
    unique,
)
from .peers_file_kafka import RECORD_SIZE
from .ship_throughput import CHUNK, count, drop, prepare_indices, produce, ship_command

KEY = "peers_kafka_es"
TITLE = "9. Kafka -> Elasticsearch: logpipe ship beside rsyslog and the node's ceiling"
PARTITIONS = 3


@dataclass
class Run:
    rate: float  # docs/s, first document counted to the last
    usage: peers.Usage | None  # None for the in-process ceiling
    indexed: int
    #: Average cores used over the docs/s window: node, broker, shipper (or the raw client), machine.
    cores: dict[str, float] = field(default_factory=dict)


class IndexWatch:
    """Polls the documents in ``PREFIX-*``: when the first arrived, when N had.

    It reads the primaries' ``indexing.index_total`` (documents created: a
    ``create`` refused as a 409 is not one), which costs the node no refresh:
    a refresh every 0.25 s cost it about a fifth more CPU per document.
    """

    def __init__(
        self,
        client: Any,
        prefix: str,
        n: int,
        interval: float = 0.25,
        probe: peers.CPUProbe | None = None,
    ) -> None:
        self.client, self.prefix, self.n, self.interval = client, prefix, n, interval
        self.probe = probe
        #: CPU readings when the first document was counted and when the last was.
        self.cpu_first: peers.CPUReading | None = None
        self.cpu_done: peers.CPUReading | None = None
        self.first: float | None = None
        self.last_at: float | None = None
        self.done: float | None = None
        self.last_count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _count(self) -> int:
        c = self.client.options(ignore_status=404)
        stats = c.indices.stats(index=f"{self.prefix}-*", metric="indexing")
        return int(stats.get("_all", {}).get("primaries", {}).get("indexing", {}).get("index_total", 0))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                counted = self._count()
            except Exception:
                counted = self.last_count
            now = time.perf_counter()
            edge = counted and (self.first is None or counted >= self.n)  # the window's start or end
            reading = self.probe.read() if self.probe and edge else None
            if counted and self.first is None:
                self.first, self.cpu_first = now, reading
            if counted != self.last_count:
                self.last_at = now
            self.last_count = counted
            if counted >= self.n:
                self.done, self.cpu_done = now, reading
                return
            self._stop.wait(self.interval)

    def wait(self, timeout: float, stall: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline and self.done is None:
            if self.last_count != last:
                last, since = self.last_count, time.monotonic()
            elif time.monotonic() - since > stall:
                break
            time.sleep(0.05)
        return self.done is not None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def end(self) -> float:
        """When the last document was counted (now, if none was)."""
        return self.done or self.last_at or time.perf_counter()

    def rate(self, indexed: int) -> float:
        """*indexed* documents over the window from the first count to the last, in docs/s (NaN: no window)."""
        end = self.end()
        span = end - (self.first or end)
        # the first count comes up to one interval after the first document: the span is that much short
        return indexed / (span + self.interval / 2) if span > 0 else float("nan")


def _watch(watched: peers.Watched, client: Any, prefix: str, n: int) -> Run:
    probe = peers.server_probe().with_process("shipper", watched.proc.pid)
    watch = IndexWatch(client, prefix, n, probe=probe)
    try:
        watch.wait(900)
    finally:
        watch.stop()
    usage = watched.finish(60, signal.SIGTERM)
    usage.wall = watch.end() - watched.started
    indexed = count(client, prefix)
    rate = watch.rate(indexed)
    cores = peers.CPUProbe.cores(watch.cpu_first, watch.cpu_done) if watch.cpu_first and watch.cpu_done else {}
    return Run(rate, usage, indexed, cores)


def run_ship(topic: str, n: int, work: Path, records: list[Any]) -> Run:
    prefix = unique("bench-pship")
    client = prepare_indices(prefix)
    cmd = ship_command(topic, unique("bench-pship-group"), prefix)
    env = {**os.environ, "LOGPIPE_ELASTICSEARCH_REPLICAS": "0", "LOGPIPE_ELASTICSEARCH_CHUNK_SIZE": str(CHUNK)}
    try:
        watched = peers.Watched(cmd, env=env)
        try:
            return _watch(watched, client, prefix, n)
        finally:
            watched.kill()
    finally:
        drop(client, prefix)


def run_rsyslog(topic: str, n: int, work: Path, records: list[Any]) -> Run:
    prefix = unique("bench-prsys")
    client = prepare_indices(prefix)
    try:
        conf = peers.rsyslog_kafka_to_es(topic, unique("bench-prsys-group"), prefix, work / "rsyslog")
        rsyslog = peers.Rsyslog(conf, work / "rsyslog")
        try:
            run = _watch(rsyslog.watched, client, prefix, n)
        finally:
            rsyslog.watched.kill()
        if run.indexed < n:
            LOSSES.append(f"rsyslog imkafka->omelasticsearch indexed {run.indexed:,}/{n:,}: {rsyslog.log()[-300:]}")
        return run
    finally:
        drop(client, prefix)


def run_ceiling(topic: str, n: int, work: Path, records: list[Any]) -> Run:
    best = es_ceiling.LAST
    assert best is not None
    rate, counted, cores = es_ceiling.measure_once(records, best.batch, best.threads, peers.server_probe())
    if "client" in cores:
        cores["shipper"] = cores.pop("client")
    return Run(rate, None, counted, cores)


#: The cores columns: what `peers.CPUProbe` reads (the ceiling's raw client is in the shipper's column).
CORES = {
    "node": "node cores",
    "broker": "broker cores",
    "shipper": "shipper (or client) cores",
    "machine": "machine cores busy",
}


def _cpu_note(figures: dict[str, dict[str, Any]], best: es_ceiling.Ceiling) -> str:
    """Who used the cores during the ship rows and during the ceiling, in words."""
    ceiling, ship = figures.get("ceiling", {}), figures.get("ship", {})
    head = (
        f"The ceiling is {best.batch:,} documents a request x {best.threads} threads (es_ceiling's doubling search). "
        f"Cores are averages over each row's docs/s window (medians over rounds) of the {os.cpu_count()} this "
        "machine has; the ceiling's client is the bench's own process sending prebuilt bytes."
    )
    if not ceiling.get("cores") or not ship.get("cores"):
        return head + " The broker's and the node's processes were not visible from the bench: no cores measured."
    c, s = ceiling["cores"], ship["cores"]
    us = ship["cpu_us_per_doc"]

    def of(figs: dict[str, float], key: str, digits: int = 2) -> str:
        return f"{figs[key]:.{digits}f}" if key in figs else "-"

    cu = ceiling["cpu_us_per_doc"]
    return head + (
        f" During the ceiling the node used {of(c, 'node')} cores ({of(cu, 'node', 1)} us of CPU "
        f"a document) and the client {of(c, 'shipper')}; during logpipe ship the node used {of(s, 'node')} cores "
        f"({of(us, 'node', 1)} us a document), the broker {of(s, 'broker')} ({of(us, 'broker', 1)} us a document) and "
        f"the shipper {of(s, 'shipper')} ({of(us, 'shipper', 1)} us a document: poll, check, bulk bodies, answers), "
        f"with the machine {of(s, 'machine')} cores busy in all (every process on it, the bench's and any other). "
        "What the broker and the shipper use is taken "
        "from the node on a machine it shares with them; the ceiling does not pay it."
    )


#: What a lossy peer's own log said, for the notes.
LOSSES: list[str] = []

PEERS: dict[str, tuple[str, tuple[str, ...], Callable[[str, int, Path, list[Any]], Run]]] = {
    "ship": (
        f"logpipe ship (confluent-kafka consumer, batches of 2,000 as bulk requests of {CHUNK}, 4 in flight)",
        (),
        run_ship,
    ),
    "rsyslog": (
        "rsyslog imkafka -> omelasticsearch (bulk, 2,000 a request, 4 workers)",
        ("rsyslog", "rsyslog-kafka", "rsyslog-elasticsearch"),
        run_rsyslog,
    ),
    "ceiling": ("raw bulk ceiling (pre-serialised, from memory)", (), run_ceiling),
}


def run(ctx: Context) -> Section:
    started = time.perf_counter()
    require_kafka()
    require_es()
    require_module("elasticsearch", "elasticsearch")
    require_module("confluent_kafka", "confluent-kafka")
    require_module("psutil")
    try:
        import logpipe.ship  # noqa: F401
    except ImportError as exc:
        raise Skip(f"logpipe ship is not available ({exc})") from None
    from .kafka_throughput import _delete_topic, make_records

    tools = peers.ensure_tools(ctx.say)
    n, rounds = (20_000, 1) if ctx.quick else (200_000, 3)
    records = make_records(n, size=RECORD_SIZE)
    size = sum(len(r.payload) for r in records) / n
    if es_ceiling.LAST is None:
        ctx.say(f"{KEY}: searching the raw bulk batch size (es_ceiling did not run before in this process)")
        es_ceiling.search(ctx, records)  # the same search as es_ceiling's, on the same documents
    best = es_ceiling.LAST
    assert best is not None
    available: dict[str, str] = {}
    for key, (_label, packages, _fn) in PEERS.items():
        try:
            tools.require(*packages)
            available[key] = ""
        except Skip as exc:
            available[key] = str(exc)
    LOSSES.clear()
    topic = unique("bench-peers-es")
    create_topic(topic, PARTITIONS)
    ctx.say(f"{KEY}: producing {n:,} records to {topic}")
    produce(records, topic)
    runs: dict[str, list[Run]] = {k: [] for k in PEERS if not available[k]}
    order = list(runs)
    try:
        with tempfile.TemporaryDirectory(prefix="logpipe-bench-peers-es-") as tmp:
            for r in range(rounds):
                for key in order[r % len(order) :] + order[: r % len(order)]:
                    work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=tmp))
                    one = PEERS[key][2](topic, n, work, records)
                    runs[key].append(one)
                    cost = (
                        f", {one.usage.wall:.1f} s wall, {one.usage.cpu:.1f} s CPU, {peers.rss_mib(one.usage.peak_rss)}"
                        if one.usage
                        else ""
                    )
                    if one.cores:
                        cost += ", cores " + " ".join(f"{k} {v:.2f}" for k, v in one.cores.items())
                    ctx.say(f"{KEY} round {r + 1}/{rounds} {key}: {one.rate:,.0f} docs/s{cost}, {one.indexed:,}/{n:,}")
    finally:
        _delete_topic(topic)
    section = Section(
        key=KEY,
        title=TITLE,
        columns=[
            "peer",
            "docs/s",
            "spread (docs/s)",
            "% of ceiling",
            "wall s",
            "CPU s",
            "peak RSS",
            "indexed",
            *CORES.values(),
        ],
        quick=ctx.quick,
    )
    figures: dict[str, dict[str, Any]] = {}
    for key, (label, _packages, _fn) in PEERS.items():
        if available[key]:
            section.rows.append({"peer": label, "key": key, "skipped": available[key]})
            continue
        rs = runs[key]
        rates = [x.rate for x in rs]
        pct = [x.rate / c.rate for x, c in zip(rs, runs["ceiling"], strict=True)]
        usages = [x.usage for x in rs if x.usage]
        cores = {k: median(c) for k in CORES if (c := [x.cores[k] for x in rs if k in x.cores])}
        fig = {
            "rate": median(rates),
            "rates": rates,
            "of_ceiling": median(pct),
            "wall": median(u.wall for u in usages) if usages else None,
            "cpu": median(u.cpu for u in usages) if usages else None,
            "peak_rss": max((u.peak_rss for u in usages), default=None),
            "indexed": min(x.indexed for x in rs),
            "cores": cores,
            # CPU microseconds per document indexed, per process, over the docs/s window
            "cpu_us_per_doc": {
                k: median(x.cores[k] / x.rate * 1e6 for x in rs if k in x.cores) for k in cores if k != "machine"
            },
        }
        figures[key] = fig
        section.rows.append(
            {
                "peer": label + (f" ({best.batch:,} docs x {best.threads} threads)" if key == "ceiling" else ""),
                "key": key,
                "docs/s": fmt_num(fig["rate"]),
                "spread (docs/s)": spread(rates),
                "% of ceiling": "100%" if key == "ceiling" else fmt_pct(fig["of_ceiling"]),
                "wall s": "-" if fig["wall"] is None else f"{fig['wall']:.1f}",
                "CPU s": "-" if fig["cpu"] is None else f"{fig['cpu']:.1f}",
                "peak RSS": "-" if fig["peak_rss"] is None else peers.rss_mib(fig["peak_rss"]),
                "indexed": f"{fig['indexed']:,}/{n:,}" + (" **LOST DOCUMENTS**" if fig["indexed"] < n else ""),
                **{column: f"{cores[k]:.2f}" if k in cores else "-" for k, column in CORES.items()},
            }
        )
    ship, rsys = figures.get("ship"), figures.get("rsyslog")
    if ship:
        ahead = rsys is None or ship["rate"] > rsys["rate"]
        versus = f", rsyslog {fmt_num(rsys['rate'])} docs/s" if rsys else ", rsyslog not measured"
        section.targets.append(
            Target(
                "Kafka -> ES docs/s >= 90% of the node's raw bulk ceiling and ahead of rsyslog",
                f"{fmt_pct(ship['of_ceiling'])} of {fmt_num(figures['ceiling']['rate'])} docs/s"
                f" ({fmt_num(ship['rate'])} docs/s{versus})",
                None if rsys is None else ship["of_ceiling"] >= 0.9 and ahead and ship["indexed"] >= n,
            )
        )
    section.notes.append(
        f"{n:,} KafkaLog records of {size:.0f} bytes on a {PARTITIONS}-partition topic, {rounds} round(s) per peer "
        "in rotating order; docs/s is the median over rounds, % of ceiling the median of per-round ratios to the "
        "ceiling's round. The shippers' docs/s runs from the first document indexed to the last (the primaries' "
        "`indexing.index_total`, polled every 0.25 s without a refresh, which would cost the node CPU the ceiling "
        "does not pay; half an interval is added for the first document's wait), so start-up "
        "and joining the consumer group are out; wall time is from launch. The ceiling is measured from memory, "
        "with nothing but the bulk requests (see the Elasticsearch ceiling section)."
    )
    section.notes.append(
        "rsyslog writes the same documents as logpipe: index `PREFIX-%$!Time:1:4%.%$!Time:6:7%.%$!Time:9:10%` "
        "(the record's `Time`, which logpipe writes in UTC: the same daily index as logpipe's UTC day), `_id` from "
        "`Id` as `create` (a redelivered record is a 409, not a second document), the message's JSON as it came. "
        "imkafka leaves offset commits to librdkafka's auto-commit timer, independent of whether the documents were "
        "indexed (a crash can lose or repeat), "
        "where logpipe ship commits only what Elasticsearch acknowledged."
    )
    section.notes.append(_cpu_note(figures, best))
    section.notes.append(tools.note())
    section.notes.extend(LOSSES)
    section.extra = {
        "figures": figures,
        "n": n,
        "rounds": rounds,
        "ceiling": {"batch": best.batch, "threads": best.threads},
        "skipped": {k: v for k, v in available.items() if v},
    }
    section.seconds = time.perf_counter() - started
    return section
