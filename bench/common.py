"""What every workload shares: result sections, statistics, the servers, the machine.

A workload is a module with ``run(ctx) -> Section``. A `Section` is plain
data (title, rows, targets, notes, images) so that the report can print it as
a rich table, write it as Markdown, and keep it as JSON between runs
(``--only`` re-runs some workloads and keeps the others' last figures).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from logpipe.plugins import DISTRIBUTION

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

KAFKA_BOOTSTRAP = os.environ.get("LOGPIPE_BENCH_KAFKA", "127.0.0.1:19092")
ES_URL = os.environ.get("LOGPIPE_BENCH_ES", "http://127.0.0.1:19200")


# -- results ---------------------------------------------------------------------------


@dataclass
class Target:
    """One target of the issue, judged on figures of the same run."""

    text: str
    value: str
    met: bool | None  # None: could not be judged (skipped workload)


@dataclass
class Section:
    """The result of one workload."""

    key: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # paths relative to docs/
    skipped: str = ""  # non-empty: the whole workload did not run, and why
    seconds: float = 0.0
    when: str = ""
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # raw figures (JSON only)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Section:
        data = dict(data)
        data["targets"] = [Target(**t) for t in data.get("targets", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def skipped_section(key: str, title: str, reason: str) -> Section:
    return Section(key=key, title=title, columns=[], skipped=reason)


@dataclass
class Context:
    """What the runner hands each workload."""

    quick: bool
    docs: Path  # where docs/benchmarks.md lives; images go to docs/img/
    verbose: bool = True

    def say(self, message: str) -> None:
        if self.verbose:
            print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Skip(Exception):
    """Raised by a workload (or a peer) that cannot run here; the message says why."""


# -- statistics ------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[k])


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def spread(values: Iterable[float]) -> str:
    """``min-max`` of round figures, for the report."""
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    return f"{fmt_num(min(vals))}-{fmt_num(max(vals))}"


def fmt_num(value: float | int | None, digits: int = 3) -> str:
    """Readable figure: 3 significant digits, thousands separators for big ones."""
    if value is None or value != value:
        return "-"
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def fmt_ratio(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.2f}x"


def fmt_pct(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value * 100:.1f}%" if value < 2 else f"{value * 100:.0f}%"


# -- the servers -------------------------------------------------------------------------


def port_open(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError:
        return False
    return True


def kafka_up() -> bool:
    return port_open(KAFKA_BOOTSTRAP)


def es_up() -> bool:
    try:
        import urllib.request

        with urllib.request.urlopen(f"{ES_URL}/_cluster/health", timeout=3) as answer:
            return answer.status == 200
    except Exception:
        return False


def require_kafka() -> None:
    if not kafka_up():
        raise Skip(f"Kafka broker not reachable at {KAFKA_BOOTSTRAP} (bash scripts/kafka.sh start)")


def require_es() -> None:
    if not es_up():
        raise Skip(f"Elasticsearch not reachable at {ES_URL} (bash scripts/elasticsearch.sh start)")


def require_module(module: str, package: str | None = None) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"{package or module} not installed (pip install -r bench/requirements.txt): {exc}") from None


def exporter_available(name: str) -> bool:
    """True when a logpipe exporter plugin of that name is registered and importable."""
    from logpipe import plugins

    try:
        plugins.load_class(name)
    except Exception:
        return False
    return True


def create_topic(name: str, partitions: int = 3, bootstrap: str = KAFKA_BOOTSTRAP) -> None:
    """Create *name* (idempotent), so no round pays for auto-creation."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="logpipe-bench")
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    time.sleep(0.5)  # let metadata settle


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"


# -- the machine ---------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    info: dict[str, str] = {}
    info["cores (nproc)"] = str(os.cpu_count())
    try:
        affinity = len(os.sched_getaffinity(0))
        info["cores (nproc)"] = str(affinity)
    except AttributeError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["CPU"] = cpu or platform.processor() or "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    info["OS"] = f"{platform.system()} {platform.release()}"
    info["Python"] = f"{platform.python_implementation()} {platform.python_version()}"
    versions = []
    for dist in (
        DISTRIBUTION,
        "structlog",
        "orjson",
        "opentelemetry-sdk",
        "python-json-logger",
        "python-logstash-async",
        "kafka-python",
        "confluent-kafka",
        "elasticsearch",
    ):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    info["libraries"] = ", ".join(versions)
    info["servers"] = (
        "Apache Kafka 4.1.1 (KRaft, 1 node, scripts/kafka.sh), Elasticsearch 8.14.3 (1 node, "
        "scripts/elasticsearch.sh), both on 127.0.0.1 with 512 MiB heaps, on the same machine"
    )
    return info


def unpack_revision(revision: str, workdir: Path, name: str) -> Path | None:
    """``src/`` of the repository at *revision*, unpacked into *workdir*/*name*; None when git cannot produce it."""
    archive = subprocess.run(["git", "archive", "--format=tar", revision, "src"], cwd=REPO, capture_output=True)
    if archive.returncode != 0:
        return None
    root = workdir / name
    root.mkdir()
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True, capture_output=True)
    return root / "src"


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except Exception:
        return "?"


# -- small helpers ------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def sample_payloads(n: int, size: int = 300) -> list[bytes]:
    """*n* KafkaLog records of about *size* bytes, encoded by logpipe itself."""
    from logpipe.record import make_record

    out = []
    base = make_record(type="info", msg="order placed", func_name="shop.orders.place", fields={}).payload
    pad = max(0, size - len(base) - 80)
    for i in range(n):
        rec = make_record(
            type="info",
            msg="order placed",
            func_name="shop.orders.place",
            fields={"order_id": i, "user": "alice", "amount": 42.5, "note": "x" * pad},
        )
        out.append(rec.payload)
    return out


def null_logger(processors: Any, sink: Any = None) -> Any:
    """A cached structlog logger running *processors*, writing its local output to *sink* (/dev/null).

    The logger every logpipe measurement logs through: the same wrapper, level filter and sink.
    """
    import logging

    import structlog

    if sink is None:
        sink = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the logger (the process)
    return structlog.wrap_logger(
        structlog.BytesLogger(sink),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
