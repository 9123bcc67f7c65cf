"""Workload 1: what one log call costs the application.

Every peer logs the same event (a message and four fields) from the same
loop, each call timed on its own with ``perf_counter_ns``; the cost of the
timer and loop (measured on an empty call) is subtracted. Peers take turns in
rounds whose order rotates (A B C D E, B C D E A, ...), so slow drift of the
machine hits them alike. Between rounds each peer flushes its background
worker, untimed, so no peer's backlog spills into another's round; the
process CPU time of a round, flush included, gives the CPU per event on all
threads (a background worker's cost is still paid by the application's
process under the GIL).

Peers:

* **logpipe**: ``logpipe.processors(exporter="kafka")`` (the real broker, acks=all, the client
  ``LOGPIPE_KAFKA_CLIENT=auto`` picks: confluent-kafka when installed) behind
  structlog's ``BytesLogger``; the chain renders the KafkaLog JSON once, returns
  it to structlog's own logger, and queues it for the Kafka exporter. Without
  a broker an exporter that discards each batch stands in (the queueing is the
  same). The same with each client forced: ``logpipe_confluent``
  (confluent-kafka, in process under ``LOGPIPE_ISOLATION=auto``),
  ``logpipe_kafka_python`` (kafka-python, in a child process) and
  ``logpipe_thread`` (kafka-python in process).
* **structlog**: structlog's documented fast configuration: ``merge_contextvars``,
  ``add_log_level``, ``format_exc_info``, ``TimeStamper(iso, utc)``,
  ``JSONRenderer(orjson.dumps)``, ``BytesLoggerFactory`` semantics,
  ``make_filtering_bound_logger(INFO)``, ``cache_logger_on_first_use``.
* **stdlib logging**: a ``logging.Logger`` with a ``StreamHandler`` and
  python-json-logger's ``JsonFormatter``.
* **OpenTelemetry SDK**: ``LoggingHandler`` → ``LoggerProvider`` →
  ``BatchLogRecordProcessor`` → ``InMemoryLogRecordExporter`` (cleared at every
  round's flush), and the same with an exporter that discards each batch, which
  keeps no record alive (the faster of the two is what the target is judged on).
* **python-logstash-async**: ``AsynchronousLogstashHandler`` with its in-memory
  event cache and a transport that discards (no Logstash server).

Every sink is ``/dev/null`` opened by the benchmark: the JSON is written (and
flushed) like it would be to a file, but goes nowhere.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    KAFKA_BOOTSTRAP,
    Context,
    Section,
    Skip,
    Target,
    exporter_available,
    fmt_num,
    fmt_ratio,
    kafka_up,
    median,
    null_logger,
    percentile,
    require_module,
    spread,
    unique,
)

KEY = "call_cost"
TITLE = "1. Cost of one log call to the application"

FIELDS = {"user": "alice", "amount": 42.5, "path": "/api/orders"}


@dataclass
class Peer:
    key: str
    label: str
    log: Callable[[int], Any]
    flush: Callable[[], Any]
    close: Callable[[], Any]
    detail: str = ""
    #: A context manager factory entered around each of the peer's rounds (flush included).
    around: Callable[[], Any] | None = None
    #: CPU nanoseconds used so far by the peer's helper processes (logpipe's exporter child), if any.
    helper_cpu: Callable[[], int] | None = None


# -- the peers -----------------------------------------------------------------------


def _devnull_bytes() -> Any:
    return open(os.devnull, "wb")  # noqa: SIM115 - closed by the peer's close()


def _devnull_text() -> Any:
    return open(os.devnull, "w")  # noqa: SIM115


def delete_topic(topic: str) -> None:
    from .kafka_throughput import _delete_topic

    _delete_topic(topic)


def build_pipeline(
    package: Any,
    exporter: Any,
    *,
    exporter_options: dict[str, Any] | None = None,
    fallback_exporter: str = "none",
    **settings: Any,
) -> Any:
    """What ``logpipe.configure`` builds, without making it the current pipeline.

    So several peers (or patched copies of the package) can live side by side:
    configure() would shut the previous pipeline down.
    """
    config = importlib.import_module(f"{package.__name__}.config")
    settings["exporter"] = (exporter,) if isinstance(exporter, str) else ("custom",)
    settings["fallback_exporter"] = fallback_exporter
    parsed = config.load(config.Settings, config.CORE_PREFIX, settings, None)
    return package.Pipeline.from_settings(parsed, [exporter], exporter_options, None, None)


def discard_exporter(package: Any) -> Any:
    """An exporter of *package* (logpipe or a patched copy) that accepts and forgets every batch.

    Records live as long as they would with a real exporter (queued, then one
    batch in flight), unlike the ``memory`` exporter, which keeps them all.
    """

    class Discard(package.Exporter):  # type: ignore[misc,name-defined]
        def export(self, batch: Any) -> Any:
            return package.ExportResult.SUCCESS

        def describe(self) -> str:
            return "discard"

    return Discard()


def logpipe_peer(exporter: str = "auto", *, options: dict[str, Any] | None = None, isolation: str = "auto") -> Peer:

    import logpipe

    kafka = exporter == "kafka" or (exporter == "auto" and kafka_up() and exporter_available("kafka"))
    sink = _devnull_bytes()
    if kafka:
        topic = unique("bench-callcost")
        opts = {"bootstrap_servers": KAFKA_BOOTSTRAP, "topic": topic, "acks": "all", **(options or {})}
        fallback = "auto" if exporter_available("spool") else "none"
        pipeline = build_pipeline(
            logpipe,
            "kafka",
            exporter_options={"kafka": opts},
            fallback_exporter=fallback,
            service="bench",
            isolation=isolation,
        )
        where = "in a child process" if child_pid(pipeline) is not None else "in process"
        exp = pipeline.dispatchers[0].exporter
        client = getattr(getattr(exp, "inner", exp), "client", "?")
        detail = (
            f"kafka exporter on {client} {where} (LOGPIPE_ISOLATION={isolation}), acks=all, local broker, "
            f"fallback {fallback}"
        )
    else:
        pipeline = build_pipeline(logpipe, discard_exporter(logpipe), service="bench")
        if not kafka_up():
            reason = "no broker"
        elif not exporter_available("kafka"):
            reason = "kafka exporter not registered"
        else:
            reason = "LOGPIPE_BENCH_CALL_EXPORTER=memory"
        detail = f"discarding exporter ({reason}); the queueing is the same dispatcher"
    call = logpipe_call(pipeline, sink)

    def flush() -> None:
        pipeline.force_flush(30.0)

    def close() -> None:
        pipeline.shutdown(10.0)
        sink.close()
        if kafka:
            delete_topic(topic)

    return Peer(
        "logpipe",
        "logpipe (chain + Kafka enqueue)" if kafka else "logpipe (chain + enqueue)",
        call,
        flush,
        close,
        detail,
        helper_cpu=lambda: process_cpu_ns(child_pid(pipeline)),
    )


def child_pid(pipeline: Any) -> int | None:
    """The pid of the child process running the pipeline's exporter (started by its first export), if any."""
    exporter = pipeline.dispatchers[0].exporter
    if not hasattr(exporter, "inner"):
        return None
    pipeline.force_flush(30.0)  # the child starts with the first batch
    child = getattr(exporter, "_child", None)
    return getattr(child, "pid", None) or -1


def process_cpu_ns(pid: int | None) -> int:
    """User + system CPU of process *pid* so far, from /proc (0 without one)."""
    if not pid or pid < 0:
        return 0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def logpipe_discard_peer() -> Peer:
    """The same chain and queue with an exporter that discards: the call without a client library's threads."""
    peer = logpipe_peer("memory")
    peer.key = "logpipe_discard"
    peer.label = "logpipe (chain + enqueue), discarding exporter"
    peer.detail = "discarding exporter: no Kafka client threads competing for the GIL"
    return peer


def _client_peer(client: str, key: str, label: str, isolation: str = "auto") -> Peer:
    """logpipe to Kafka with the exporter's client library forced (LOGPIPE_KAFKA_CLIENT=*client*)."""
    if not (kafka_up() and exporter_available("kafka")):
        raise Skip("needs the Kafka broker and logpipe's kafka exporter")
    require_module("confluent_kafka" if client == "confluent-kafka" else "kafka", client)
    peer = logpipe_peer("kafka", options={"client": client}, isolation=isolation)
    peer.key = key
    peer.label = label
    return peer


def logpipe_confluent_peer() -> Peer:
    """The Kafka exporter on confluent-kafka (librdkafka): in the application's process under auto isolation."""
    return _client_peer("confluent-kafka", "logpipe_confluent", "logpipe (chain + Kafka enqueue), confluent-kafka")


def logpipe_kafka_python_peer() -> Peer:
    """The Kafka exporter on kafka-python: in a child process under auto isolation."""
    return _client_peer("kafka-python", "logpipe_kafka_python", "logpipe (chain + Kafka enqueue), kafka-python")


def logpipe_in_process_peer() -> Peer:
    """logpipe to Kafka on kafka-python with the exporter in the application's process (LOGPIPE_ISOLATION=thread)."""
    return _client_peer(
        "kafka-python", "logpipe_thread", "logpipe (chain + Kafka enqueue), kafka-python in process", "thread"
    )


def structlog_peer() -> Peer:
    import orjson
    import structlog

    sink = _devnull_bytes()
    log = structlog.wrap_logger(
        structlog.BytesLogger(sink),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )

    def call(i: int) -> None:
        log.info("order placed", order_id=i, user="alice", amount=42.5, path="/api/orders")

    return Peer(
        "structlog",
        "structlog JSON (orjson, BytesLogger)",
        call,
        lambda: None,
        sink.close,
        "merge_contextvars, add_log_level, format_exc_info, TimeStamper(iso, utc), JSONRenderer(orjson.dumps)",
    )


def _std_logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def stdlib_peer() -> Peer:
    jsonlogger = require_module("pythonjsonlogger.json", "python-json-logger")
    sink = _devnull_text()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(jsonlogger.JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = _std_logger("bench.stdlib", handler)

    def call(i: int) -> None:
        logger.info("order placed", extra={"order_id": i, "user": "alice", "amount": 42.5, "path": "/api/orders"})

    def close() -> None:
        handler.close()
        sink.close()

    return Peer(
        "stdlib",
        "stdlib logging + JSON formatter",
        call,
        lambda: None,
        close,
        "StreamHandler, python-json-logger JsonFormatter",
    )


def otel_peer(discard: bool = False) -> Peer:
    try:
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        try:
            from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemory
        except ImportError:  # SDK < 1.39
            from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemory  # type: ignore[no-redef]
    except ImportError as exc:
        raise Skip(f"opentelemetry-sdk logs API not available: {exc}") from None
    from opentelemetry.sdk.resources import Resource

    exporter = InMemory()
    if discard:
        import opentelemetry.sdk._logs.export as sdk_export

        base = type(exporter).__mro__[1]  # the SDK's exporter base class
        result = getattr(sdk_export, "LogRecordExportResult", None) or sdk_export.LogExportResult

        class Discard(base):  # type: ignore[misc,valid-type]
            def export(self, batch: Any) -> Any:
                return result.SUCCESS

            def shutdown(self) -> None:
                pass

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return True

        exporter = Discard()
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)
    logger = _std_logger("bench.otel-discard" if discard else "bench.otel", handler)

    def call(i: int) -> None:
        logger.info("order placed", extra={"order_id": i, "user": "alice", "amount": 42.5, "path": "/api/orders"})

    def flush() -> None:
        provider.force_flush()
        if not discard:
            exporter.clear()

    def close() -> None:
        provider.shutdown()

    if discard:
        return Peer(
            "otel_discard",
            "OpenTelemetry SDK LoggingHandler, discarding exporter",
            call,
            flush,
            close,
            "BatchLogRecordProcessor, exporter that discards each batch",
        )
    return Peer(
        "otel", "OpenTelemetry SDK LoggingHandler", call, flush, close, "BatchLogRecordProcessor, in-memory exporter"
    )


def logstash_peer() -> Peer:
    handler_mod = require_module("logstash_async.handler", "python-logstash-async")
    transport_mod = require_module("logstash_async.transport", "python-logstash-async")

    class NullTransport(transport_mod.Transport):  # type: ignore[misc,name-defined]
        """Discards events: no Logstash server is involved."""

        def __init__(self) -> None:
            pass

        def send(self, events: list[Any], **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

    handler = handler_mod.AsynchronousLogstashHandler("127.0.0.1", 5959, database_path=None, transport=NullTransport())
    logger = _std_logger("bench.logstash", handler)

    def call(i: int) -> None:
        logger.info("order placed", extra={"order_id": i, "user": "alice", "amount": 42.5, "path": "/api/orders"})

    def close() -> None:
        handler.flush()
        handler.shutdown()

    return Peer(
        "logstash",
        "python-logstash-async handler",
        call,
        handler.flush,
        close,
        "AsynchronousLogstashHandler, in-memory cache, discarding transport",
    )


PEERS: dict[str, Callable[[], Peer]] = {
    "logpipe": logpipe_peer,
    "structlog": structlog_peer,
    "stdlib": stdlib_peer,
    "logpipe_thread": logpipe_in_process_peer,
    "logpipe_discard": lambda: logpipe_discard_peer(),
    "logpipe_confluent": logpipe_confluent_peer,
    "logpipe_kafka_python": logpipe_kafka_python_peer,
    "otel": otel_peer,
    "otel_discard": lambda: otel_peer(discard=True),
    "logstash": logstash_peer,
}
BASELINE = "structlog"


# -- measuring -------------------------------------------------------------------------


def _timed(call: Callable[[int], Any], start: int, n: int, out: array) -> None:  # type: ignore[type-arg]
    pc = time.perf_counter_ns
    for j in range(n):
        t0 = pc()
        call(start + j)
        out[j] = pc() - t0


def _noop(i: int) -> None:
    pass


def timer_overhead(n: int = 20000) -> float:
    """ns the loop and the two clock reads add to every sample (median of an empty call)."""
    out = array("q", bytes(8 * n))
    _timed(_noop, 0, n, out)
    _timed(_noop, 0, n, out)
    return float(sorted(out)[n // 2])


@dataclass
class RoundResult:
    median: float
    p99: float
    p999: float
    max: float
    cpu_per_event: float  # ns of process CPU, all threads, flush included
    wall_per_event: float  # ns of wall time, flush included


def measure_round(peer: Peer, start: int, n: int, overhead: float) -> RoundResult:
    out = array("q", bytes(8 * n))
    gc.collect()
    with peer.around() if peer.around is not None else contextlib.nullcontext():
        helper0 = peer.helper_cpu() if peer.helper_cpu else 0
        cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
        _timed(peer.log, start, n, out)
        peer.flush()
        cpu1, wall1 = time.process_time_ns(), time.perf_counter_ns()
        cpu1 += (peer.helper_cpu() if peer.helper_cpu else 0) - helper0
    s = sorted(out)
    return RoundResult(
        median=max(0.0, percentile(s, 50) - overhead),
        p99=max(0.0, percentile(s, 99) - overhead),
        p999=max(0.0, percentile(s, 99.9) - overhead),
        max=float(s[-1]),
        cpu_per_event=(cpu1 - cpu0) / n,
        wall_per_event=(wall1 - wall0) / n,
    )


def measure(
    factories: dict[str, Callable[[], Peer]], *, rounds: int, calls: int, warmup: int, say: Callable[[str], None]
) -> tuple[dict[str, Peer], dict[str, str], dict[str, list[RoundResult]], float]:
    """Run the peers in rotating order; returns peers, skip reasons, per-round results, overhead."""
    peers: dict[str, Peer] = {}
    skipped: dict[str, str] = {}
    for key, make in factories.items():
        try:
            peers[key] = make()
        except Skip as exc:
            skipped[key] = str(exc)
    overhead = timer_overhead()
    results: dict[str, list[RoundResult]] = {k: [] for k in peers}
    try:
        for peer in peers.values():  # warm up: caches, worker threads, broker connection, topic metadata
            for i in range(warmup):
                peer.log(i)
            peer.flush()
        order = list(peers)
        counter = warmup
        for r in range(rounds):
            rot = order[r % len(order) :] + order[: r % len(order)]
            for key in rot:
                results[key].append(measure_round(peers[key], counter, calls, overhead))
                counter += calls
            say(
                f"call_cost round {r + 1}/{rounds}: "
                + ", ".join(f"{k} {results[k][-1].median / 1000:.2f}us" for k in order)
            )
    finally:
        for peer in peers.values():
            try:
                peer.close()
            except Exception as exc:  # pragma: no cover - report, keep going
                say(f"closing {peer.key}: {exc}")
    return peers, skipped, results, overhead


def peer_factories(exporter: str, peers: list[str] | None = None) -> dict[str, Callable[[], Peer]]:
    """The peers to measure, by key; *exporter* as `run` takes it."""
    chosen = {k: v for k, v in PEERS.items() if peers is None or k in peers}
    if "logpipe" in chosen:
        chosen["logpipe"] = lambda: logpipe_peer(exporter)
    if exporter == "memory":

        def no_kafka() -> Peer:
            raise Skip("only with the Kafka exporter (LOGPIPE_BENCH_CALL_EXPORTER=memory)")

        for key in ("logpipe_thread", "logpipe_confluent", "logpipe_kafka_python"):
            if key in chosen:
                chosen[key] = no_kafka
    return chosen


def measure_isolated(
    keys: list[str], exporter: str, *, rounds: int, calls: int, warmup: int, say: Callable[[str], None]
) -> tuple[dict[str, Peer], dict[str, str], dict[str, list[RoundResult]], float]:
    """Like `measure`, but every round of every peer runs in a fresh process.

    In one process the peers' background threads (Kafka clients, batch
    workers) stay alive between their rounds, wake up now and then and take
    the GIL during other peers' rounds, which adds to everyone's tail. Here a
    round's process holds one peer only; rounds still alternate between peers.
    """
    import json
    import subprocess
    import sys

    from .common import REPO

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    peers: dict[str, Peer] = {}
    skipped: dict[str, str] = {}
    results: dict[str, list[RoundResult]] = {k: [] for k in keys}
    overheads: list[float] = []
    order = list(keys)
    for r in range(rounds):
        rot = order[r % len(order) :] + order[: r % len(order)]
        for key in rot:
            if key in skipped:
                continue
            cmd = [sys.executable, "-m", "bench.call_cost", "one", key, "--exporter", exporter,
                   "--calls", str(calls), "--warmup", str(warmup)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
            if done.returncode != 0 or not lines:
                skipped[key] = f"failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}"
                continue
            answer = json.loads(lines[-1])
            if "skipped" in answer:
                skipped[key] = answer["skipped"]
                continue
            peers[key] = Peer(key, answer["label"], _noop, lambda: None, lambda: None, answer["detail"])
            results[key].append(RoundResult(**answer["result"]))
            overheads.append(answer["overhead"])
        say(
            f"call_cost round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {results[k][-1].median / 1000:.2f}us" for k in order if k not in skipped)
        )
    for key in skipped:
        results.pop(key, None)
    return peers, skipped, results, median(overheads)


def one(key: str, exporter: str, calls: int, warmup: int) -> int:
    """A child of `measure_isolated`: one round of one peer, as a JSON line on stdout."""
    import json

    try:
        peer = peer_factories(exporter, [key])[key]()
    except Skip as exc:
        print(json.dumps({"skipped": str(exc)}))
        return 0
    try:
        overhead = timer_overhead()
        for i in range(warmup):
            peer.log(i)
        peer.flush()
        result = measure_round(peer, warmup, calls, overhead)
    finally:
        peer.close()
    print(json.dumps({"label": peer.label, "detail": peer.detail, "result": vars(result), "overhead": overhead}))
    return 0


def analysis(figures: dict[str, dict[str, float]]) -> list[str]:
    """What the figures say, in words (numbers from this run)."""
    out = []
    lp, sl = figures.get("logpipe"), figures.get("structlog")
    ld, lt = figures.get("logpipe_discard"), figures.get("logpipe_thread")
    if not (lp and sl and ld):
        return out
    out.append(
        f"**Reading the rows.** logpipe's chain alone (discarding exporter) costs {fmt_num(ld['median_ns'])} ns a "
        f"call, {fmt_ratio(ld['ratio'])} plain structlog, p99 {fmt_num(ld['p99_ns'])} ns: it does more than render "
        f"JSON (OpenTelemetry trace context, the caller's FuncName, a UUIDv7, the queue). With the "
        f"Kafka exporter as configured by default (`LOGPIPE_KAFKA_CLIENT=auto`) the same call measures "
        f"{fmt_num(lp['median_ns'])} ns ({fmt_ratio(lp['ratio'])}), p99 {fmt_num(lp['p99_ns'])} ns."
    )
    ck, kp = figures.get("logpipe_confluent"), figures.get("logpipe_kafka_python")
    if ck and kp:
        out.append(
            f"Per client: on confluent-kafka the exporter runs in the application's process (librdkafka's C "
            f"threads do not hold the GIL; logpipe's worker only produces and serves delivery reports): "
            f"{fmt_num(ck['median_ns'])} ns ({fmt_ratio(ck['ratio'])}), p99 {fmt_num(ck['p99_ns'])} ns, "
            f"{fmt_num(ck['cpu_ns_per_event'])} ns of CPU per event. On kafka-python it runs in a child process "
            f"(`LOGPIPE_ISOLATION=auto`, see docs/design.md), so the application's process only renders, queues and "
            f"writes each batch to a pipe: {fmt_num(kp['median_ns'])} ns ({fmt_ratio(kp['ratio'])}), p99 "
            f"{fmt_num(kp['p99_ns'])} ns, {fmt_num(kp['cpu_ns_per_event'])} ns of CPU per event (the child's "
            f"included)."
        )
    if lt:
        out.append(
            f"kafka-python's exporter in the application's process (`LOGPIPE_ISOLATION=thread`) "
            f"measures {fmt_num(lt['median_ns'])} ns, p99 {fmt_num(lt['p99_ns'])} ns, p99.9 {fmt_num(lt['p999_ns'])} "
            f"ns: logpipe's worker and kafka-python's sender are Python threads, and under the GIL each burst of "
            f"their work (a record batch built, 512 futures resolved when an acknowledgement arrives) delays the "
            f"call that is running ({fmt_num(lt['cpu_ns_per_event'])} ns of CPU per event; "
            f"{fmt_num(ld['cpu_ns_per_event'])} ns with the discarding exporter)."
        )
    out.append(
        "**Before/after (this workload's history).** Session 2's published run: 9,514 ns, 1.52x with the Kafka "
        "exporter (chain alone 8,994 ns, 1.47x), p99 36.5 us. Since: (1) `FuncNameAdder` walked the stack on every "
        "call, and each frame stepped over becomes a Python object, about 1 us a call in the chain; it now remembers "
        "the caller's depth per call path (keyed by the code that ran structlog's loop, checked against the code "
        "just below the caller) and looks up two frames; (2) batches go to the "
        "exporter's child as marshal format 2 of the record columns: format 4 looks every object up in a reference "
        "table, and the batch (220 us per 512 records, now 80 us) holds the application's GIL while it is encoded; "
        "the dispatcher takes a whole queue at C speed instead of 512 `popleft` calls."
    )
    return out


def run(
    ctx: Context, *, exporter: str | None = None, peers: list[str] | None = None, isolate: bool | None = None
) -> Section:
    """*exporter*: ``kafka``, ``memory`` or ``auto`` (Kafka when a broker answers); default from
    ``LOGPIPE_BENCH_CALL_EXPORTER``, else ``auto``."""
    exporter = exporter or os.environ.get("LOGPIPE_BENCH_CALL_EXPORTER", "auto")
    if exporter == "auto":
        exporter = "kafka" if kafka_up() and exporter_available("kafka") else "memory"
    rounds, calls, warmup = (3, 1000, 500) if ctx.quick else (15, 10000, 5000)
    chosen = peer_factories(exporter, peers)
    started = time.perf_counter()
    if isolate is None:
        isolate = not ctx.quick
    if isolate:
        live, skipped, results, overhead = measure_isolated(
            list(chosen), exporter, rounds=rounds, calls=calls, warmup=warmup, say=ctx.say
        )
    else:
        live, skipped, results, overhead = measure(chosen, rounds=rounds, calls=calls, warmup=warmup, say=ctx.say)
    section = Section(
        key=KEY,
        title=TITLE,
        columns=[
            "peer",
            "median ns",
            "p99 ns",
            "p99.9 ns",
            "ratio to structlog",
            "ratio spread",
            "CPU ns/event (all threads)",
            "configuration",
        ],
        quick=ctx.quick,
    )
    base = results.get(BASELINE)
    figures: dict[str, dict[str, float]] = {}
    for key in chosen:
        if key in skipped:
            section.rows.append({"peer": key, "skipped": skipped[key], "configuration": skipped[key]})
            continue
        rr = results[key]
        ratios = [a.median / b.median for a, b in zip(rr, base, strict=True)] if base else []
        fig = {
            "median_ns": median(r.median for r in rr),
            "p99_ns": median(r.p99 for r in rr),
            "p999_ns": median(r.p999 for r in rr),
            "max_ns": max(r.max for r in rr),
            "cpu_ns_per_event": median(r.cpu_per_event for r in rr),
            "wall_ns_per_event": median(r.wall_per_event for r in rr),
            "ratio": median(ratios) if ratios else float("nan"),
        }
        figures[key] = fig
        section.rows.append(
            {
                "peer": live[key].label,
                "key": key,
                "median ns": fmt_num(fig["median_ns"]),
                "p99 ns": fmt_num(fig["p99_ns"]),
                "p99.9 ns": fmt_num(fig["p999_ns"]),
                "ratio to structlog": fmt_ratio(fig["ratio"]),
                "ratio spread": spread(ratios) if ratios and key != BASELINE else "-",
                "CPU ns/event (all threads)": fmt_num(fig["cpu_ns_per_event"]),
                "configuration": live[key].detail,
                "median spread ns": spread([r.median for r in rr]),
            }
        )
    section.extra = {
        "figures": figures,
        "rounds": rounds,
        "calls_per_round": calls,
        "timer_overhead_ns": overhead,
        "per_round": {k: [vars(r) for r in v] for k, v in results.items()},
    }
    lp, sl = figures.get("logpipe"), figures.get("structlog")
    otels = [f for k, f in figures.items() if k in ("otel", "otel_discard")]
    ot = min(otels, key=lambda f: f["median_ns"]) if otels else None
    if lp and ot:
        section.targets.append(
            Target(
                "one log call cheaper than the OpenTelemetry handler path (median; the faster of its two variants)",
                f"{fmt_num(lp['median_ns'])} ns vs {fmt_num(ot['median_ns'])} ns",
                lp["median_ns"] < ot["median_ns"],
            )
        )
    for key, who in (("logpipe", "default client"), ("logpipe_confluent", "confluent-kafka"),
                     ("logpipe_kafka_python", "kafka-python")):  # fmt: skip
        fig = figures.get(key)
        if not fig:
            continue
        if sl:
            section.targets.append(
                Target(
                    f"one log call <= 1.3x plain structlog JSON, median ({who})",
                    fmt_ratio(fig["ratio"]),
                    fig["ratio"] <= 1.3,
                )  # fmt: skip
            )
        section.targets.append(
            Target(f"p99 <= 50 us ({who})", f"{fmt_num(fig['p99_ns'] / 1000)} us", fig["p99_ns"] <= 50_000)
        )
        section.targets.append(
            Target(
                f"CPU per event <= 16 us ({who})",
                f"{fmt_num(fig['cpu_ns_per_event'] / 1000)} us",
                fig["cpu_ns_per_event"] <= 16_000,
            )  # fmt: skip
        )
    section.notes.append(
        f"{rounds} rounds of {calls:,} calls per peer, peers in rotating order; figures are the median over rounds "
        f"(ratio spread: min-max of the per-round ratios). Timer and loop overhead ({overhead:.0f} ns, an empty "
        f"call timed the same way) is subtracted. Every peer writes its JSON to /dev/null."
    )
    if isolate:
        section.notes.append(
            "Every round of every peer runs in a fresh process (set up, warmed up with "
            f"{warmup:,} calls, then timed): in one shared process the peers' background threads (Kafka clients, "
            "batch workers) stay alive between their rounds and take the GIL during other peers' rounds, which "
            "would add to everyone's tail."
        )
    section.notes.extend(analysis(figures))
    section.notes.append(
        "CPU ns/event is the CPU time of a round (every thread, the peer's flush included, plus logpipe's exporter "
        "child process where there is one) divided by the calls: what the machine pays in total per event."
    )
    section.seconds = time.perf_counter() - started
    return section


def logpipe_call(pipeline: Any, sink: Any) -> Callable[[int], None]:
    """One log call through *pipeline*'s chain, its local JSON going to *sink* (every logpipe peer's call)."""
    log = null_logger(pipeline.processors(), sink)

    def call(i: int) -> None:
        log.info("order placed", order_id=i, user="alice", amount=42.5, path="/api/orders")

    return call


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="one round of one peer (used by measure_isolated)")
    sub = parser.add_subparsers(dest="mode", required=True)
    o = sub.add_parser("one")
    o.add_argument("key")
    o.add_argument("--exporter", default="auto")
    o.add_argument("--calls", type=int, default=10000)
    o.add_argument("--warmup", type=int, default=5000)
    a = parser.parse_args()
    sys.exit(one(a.key, a.exporter, a.calls, a.warmup))
