"""Metrics: Prometheus ``/metrics`` for ``logpipe ship`` and ``logpipe tail``; OpenTelemetry for the library.

Why collectors that read at scrape time: the shipper and the tailer already
keep their counters (`ShipStats`, `TailStats`), updated by their own thread.
A `prometheus_client` custom collector turns those into metric families when
Prometheus asks, so the hot paths gain no extra counter updates and the
numbers on ``/metrics`` are the numbers of the progress display. Only the
latency histograms need a hook (``ShipStats.on_bulk``, ``TailStats.on_batch``),
because a histogram needs every observation, not a total.

Gauges about the disk (spool backlog, bytes between a tail position and the
end of its file) are computed at scrape time too, with `logpipe.status`.

``prometheus_client`` is imported only when metrics are asked for; it comes
with ``logpipe[metrics]`` (and ``logpipe[ship]``).

For applications, `publish_stats` registers observable OpenTelemetry
instruments that read `logpipe.stats()` whenever the application's own
``MeterProvider`` collects; with no provider configured it does nothing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import status

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .ship import Shipper
    from .tail import Tailer

__all__ = [
    "LATENCY_BUCKETS",
    "MetricsServer",
    "parse_address",
    "publish_stats",
    "serve",
    "ship_registry",
    "tail_registry",
]

#: Seconds; a bulk request or Kafka batch takes milliseconds when healthy, tens of seconds when not.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``:PORT`` (every interface) -> (host, port); ValueError otherwise."""
    match = _ADDRESS.match(text.strip())
    if not match:
        raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464 or :9464 (every interface)")
    port = int(match.group("port"))
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be 0-65535")
    host = match.group("v6") or match.group("host") or "0.0.0.0"
    return host, port


# -- prometheus collectors ----------------------------------------------------------------


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Any:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _gauge(name: str, doc: str, value: float) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, value=value)


_PARTITION = re.compile(r"^(?P<topic>.*)\[(?P<partition>\d+)\]$")


class ShipCollector:
    """`ShipStats` of one running shipper as ``logpipe_ship_*`` families, read at each scrape."""

    def __init__(self, shipper: Shipper) -> None:
        self.shipper = shipper

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.shipper.stats
        yield _counter("logpipe_ship_consumed", "Messages consumed from Kafka.", s.consumed)
        yield _counter("logpipe_ship_indexed", "Documents Elasticsearch created.", s.indexed)
        yield _counter(
            "logpipe_ship_duplicates", "Messages already indexed (redelivered): 409 on create.", s.duplicates
        )
        yield _counter("logpipe_ship_dead_lettered", "Messages sent to the dead-letter destination.", s.dead_lettered)
        yield _counter("logpipe_ship_retries", "Bulk rounds sent again (Elasticsearch down, 429, 5xx).", s.retries)
        yield _counter("logpipe_ship_commits", "Offset commits.", s.commits)
        errors = CounterMetricFamily("logpipe_ship_errors", "Problems by kind.", labels=["kind"])
        errors.add_metric(["elasticsearch_unavailable"], s.retries)
        errors.add_metric(["refused_by_elasticsearch"], s.rejected)
        errors.add_metric(["malformed"], max(0, s.dead_lettered - s.rejected))
        errors.add_metric(["commit"], s.commit_errors)
        yield errors
        yield _counter("logpipe_ship_problems", "Every problem reported on stderr (all kinds).", s.errors)
        yield _gauge("logpipe_ship_in_flight", "Messages consumed and not yet accounted for.", s.in_flight)
        yield _gauge("logpipe_ship_assigned_partitions", "Partitions this shipper owns.", s.assigned)
        yield _gauge(
            "logpipe_ship_waiting", "1 while the shipper waits for Elasticsearch.", s.state.startswith("waiting")
        )
        lag = GaugeMetricFamily(
            "logpipe_ship_consumer_lag", "Log end offset minus committed offset.", labels=["topic", "partition"]
        )
        for key, value in sorted(dict(s.lag).items()):
            match = _PARTITION.match(key)
            topic, partition = (match.group("topic"), match.group("partition")) if match else (key, "")
            lag.add_metric([topic, partition], value)
        yield lag


class TailCollector:
    """`TailStats` and registry positions of one running tailer as ``logpipe_tail_*`` families."""

    def __init__(self, tailer: Tailer) -> None:
        self.tailer = tailer

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        s = self.tailer.stats
        yield _counter("logpipe_tail_lines_read", "Lines read from files.", s.lines_read)
        yield _counter("logpipe_tail_bytes_read", "Bytes read from files.", s.bytes_read)
        yield _counter("logpipe_tail_sent", "Records Kafka acknowledged.", s.sent)
        yield _counter("logpipe_tail_wrapped", "Lines that were not KafkaLog records, sent wrapped.", s.wrapped)
        yield _counter(
            "logpipe_tail_dead_lettered", "Records Kafka refused, written to the dead-letter file.", s.dead_lettered
        )
        yield _counter("logpipe_tail_retries", "Batches (or their failed records) sent again.", s.retries)
        yield _counter("logpipe_tail_rotations", "File rotations seen.", s.rotations)
        yield _counter("logpipe_tail_truncations", "File truncations seen.", s.truncations)
        errors = _counter("logpipe_tail_errors", "Problems by kind.", s.retries, {"kind": "kafka_unavailable"})
        errors.add_metric(["refused_by_kafka"], s.dead_lettered)
        errors.add_metric(["too_long"], s.too_long)
        yield errors
        yield _counter("logpipe_tail_problems", "Every problem reported on stderr (all kinds).", s.errors)
        yield _gauge("logpipe_tail_in_flight", "Records handed to Kafka, not acknowledged yet.", s.in_flight)
        yield _gauge("logpipe_tail_files_open", "Files open.", s.files_open)
        behind = GaugeMetricFamily(
            "logpipe_tail_file_behind_bytes", "File size minus the acknowledged offset.", labels=["path"]
        )
        offset = GaugeMetricFamily("logpipe_tail_file_offset_bytes", "Acknowledged offset.", labels=["path"])
        for position in status.file_positions(self._entries()):
            offset.add_metric([position.path], position.offset)
            if position.behind is not None:
                behind.add_metric([position.path], position.behind)
        yield behind
        yield offset

    def _entries(self) -> list[Any]:
        """A copy of the registry's entries (the tailer's thread changes the dict meanwhile)."""
        for _ in range(5):
            try:
                return list(self.tailer.registry.entries.values())
            except RuntimeError:  # "dictionary changed size during iteration": try again
                continue
        return []


class SpoolCollector:
    """The spool directories under a root as ``logpipe_spool_*`` gauges, labelled by exporter."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.counter = status.SpoolCounter()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        families = {
            "records": GaugeMetricFamily("logpipe_spool_records", "Records waiting in the spool.", labels=["exporter"]),
            "bytes": GaugeMetricFamily("logpipe_spool_bytes", "Bytes waiting in the spool.", labels=["exporter"]),
            "age": GaugeMetricFamily(
                "logpipe_spool_oldest_age_seconds", "Seconds the oldest waiting record has waited.", labels=["exporter"]
            ),
            "rejected": GaugeMetricFamily(
                "logpipe_spool_rejected_records",
                "Records set aside in rejected.ndjson (dead letters).",
                labels=["exporter"],
            ),
        }
        for directory in status.spool_dirs(self.root):
            backlog = self.counter.backlog(directory)
            families["records"].add_metric([backlog.name], backlog.records)
            families["bytes"].add_metric([backlog.name], backlog.bytes)
            families["age"].add_metric([backlog.name], backlog.age())
            families["rejected"].add_metric([backlog.name], backlog.rejected)
        yield from families.values()


def ship_registry(shipper: Shipper, spool_root: Path | None = None) -> CollectorRegistry:
    """A registry with the shipper's collector, its bulk latency histogram (hooked), and the spools."""
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    registry.register(ShipCollector(shipper))
    latency = Histogram(
        "logpipe_ship_bulk_seconds", "Seconds of one bulk request.", buckets=LATENCY_BUCKETS, registry=registry
    )
    shipper.stats.on_bulk = latency.observe
    if spool_root is not None:
        registry.register(SpoolCollector(spool_root))
    return registry


def tail_registry(tailer: Tailer, spool_root: Path | None = None) -> CollectorRegistry:
    """A registry with the tailer's collector, its Kafka batch latency histogram (hooked), and the spools."""
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    registry.register(TailCollector(tailer))
    latency = Histogram(
        "logpipe_tail_batch_seconds",
        "Seconds from handing a batch to Kafka to its answer.",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    tailer.stats.on_batch = latency.observe
    if spool_root is not None:
        registry.register(SpoolCollector(spool_root))
    return registry


@dataclass
class MetricsServer:
    """The HTTP server answering ``/metrics`` in a daemon thread; `close` stops it."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


def serve(address: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve *registry* on ``http://HOST:PORT/metrics``; ValueError for a bad address, OSError when taken."""
    from prometheus_client import start_http_server

    host, port = parse_address(address)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)


# -- OpenTelemetry --------------------------------------------------------------------------

_published: set[int] = set()
_publish_lock = threading.Lock()

#: `DispatchStats` field -> (instrument name, description); counters only go up.
_OTEL_COUNTERS = {
    "submitted": ("logpipe.records.submitted", "Records handed to the exporter's queue."),
    "sent": ("logpipe.records.sent", "Records the exporter delivered."),
    "spilled": ("logpipe.records.spilled", "Records handed to the fallback exporter (the spool)."),
    "dropped": ("logpipe.records.dropped", "Records dropped (full queue, shutdown)."),
    "failed": ("logpipe.records.failed", "Records neither delivered nor spilled."),
}
_OTEL_GAUGES = {
    "queued": ("logpipe.queue.records", "Records waiting in the exporter's queue."),
    "in_flight": ("logpipe.records.in_flight", "Records being exported now."),
}


def publish_stats(meter_provider: Any = None, source: Callable[[], dict[str, Any]] | None = None) -> bool:
    """Publish `logpipe.stats()` as observable instruments of *meter_provider* (default: the global one).

    Returns False, doing nothing, when no real provider is configured (the
    API's default proxy or no-op provider): logpipe never installs one for
    the application. Safe to call again (once per provider). The callbacks
    read the *current* pipeline's counters at each collection, labelled
    ``exporter``; *source* replaces `logpipe.stats` (tests).
    """
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, NoOpMeterProvider, Observation

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    if isinstance(provider, NoOpMeterProvider) or type(provider).__name__ == "ProxyMeterProvider":
        return False
    with _publish_lock:
        if id(provider) in _published:
            return True
        _published.add(id(provider))
    if source is None:
        from .pipeline import stats as pipeline_stats

        source = pipeline_stats
    read = source
    from . import __version__

    meter = provider.get_meter("logpipe", __version__)

    def observe(field: str) -> Callable[[CallbackOptions], list[Observation]]:
        def callback(options: CallbackOptions) -> list[Observation]:
            return [Observation(getattr(s, field), {"exporter": name}) for name, s in read().items()]

        return callback

    for field, (name, description) in _OTEL_COUNTERS.items():
        meter.create_observable_counter(name, [observe(field)], unit="{record}", description=description)
    for field, (name, description) in _OTEL_GAUGES.items():
        meter.create_observable_gauge(name, [observe(field)], unit="{record}", description=description)
    return True
