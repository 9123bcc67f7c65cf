"""The C peers of the bench: Debian's kcat and rsyslog, installed when missing, run and measured.

* `ensure_tools` installs the Debian packages (``apt-get update`` once, then
  ``apt-get install -y --no-install-recommends``) when a tool is missing, and
  says why when it could not: only then are the peer rows skipped.
* `Watched` launches a tool and measures it the same way as logpipe's own
  commands: wall time, CPU seconds of the process and every descendant it
  reaped (``wait4``'s rusage), and the peak of the process tree's summed RSS
  (sampled with psutil).
* `rsyslog_file_to_kafka` and `rsyslog_kafka_to_es` render the rsyslog
  configurations (plain text, tested without the servers); `Rsyslog` runs one
  with its own work directory and stops it by its pid.
* `topic_end` / `topic_count` count what actually arrived on a topic: a peer
  that loses or repeats lines is reported as such.
* `CPUProbe` reads the CPU seconds of the broker, the Elasticsearch node and a
  shipper (the processes listening on the servers' ports, found with psutil)
  at two moments, so a workload can say who used the machine's cores while it
  measured a rate.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import ES_URL, KAFKA_BOOTSTRAP, Skip

#: Debian package -> what it must bring (an executable, or an rsyslog module).
PACKAGES = {
    "kcat": "kcat",
    "rsyslog": "rsyslogd",
    "rsyslog-kafka": "omkafka.so",
    "rsyslog-elasticsearch": "omelasticsearch.so",
}
RSYSLOG_MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog")


# -- installing the tools ------------------------------------------------------------------


def _present(thing: str) -> bool:
    if thing.endswith(".so"):
        return any(Path(d, thing).exists() for d in RSYSLOG_MODULE_DIRS)
    return shutil.which(thing) is not None or Path("/usr/sbin", thing).exists()


def missing_packages() -> list[str]:
    return [package for package, thing in PACKAGES.items() if not _present(thing)]


def package_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "not installed"


@dataclass
class Tools:
    """What `ensure_tools` found or installed: versions, and for each missing package why."""

    versions: dict[str, str] = field(default_factory=dict)
    installed_now: list[str] = field(default_factory=list)
    problem: str = ""  # non-empty: some packages are missing, and why

    def require(self, *packages: str) -> None:
        """Raise `Skip` (with the install problem) unless all *packages* are usable."""
        absent = [p for p in packages if not _present(PACKAGES[p])]
        if absent:
            raise Skip(f"Debian package(s) {', '.join(absent)} not installed: {self.problem or 'unknown reason'}")

    def note(self) -> str:
        text = "C peers from Debian packages: " + ", ".join(f"`{p}` {v}" for p, v in self.versions.items()) + "."
        if self.installed_now:
            text += f" Installed by this run (`apt-get install`): {', '.join(self.installed_now)}."
        if self.problem:
            text += f" **Could not install**: {self.problem}; those peers' rows are skipped."
        return text


_TOOLS: Tools | None = None
_LOCK = threading.Lock()


def ensure_tools(say: Any = None) -> Tools:
    """Install the missing Debian packages once per run (as root); report, never raise."""
    global _TOOLS
    with _LOCK:
        if _TOOLS is not None:
            return _TOOLS
        tools = Tools()
        missing = missing_packages()
        if missing:
            tools.problem = _apt_install(missing, say)
            tools.installed_now = [p for p in missing if _present(PACKAGES[p])]
        tools.versions = {p: package_version(p) for p in PACKAGES}
        _TOOLS = tools
        return tools


def _apt_install(packages: Sequence[str], say: Any) -> str:
    """Install *packages* with apt-get; '' on success, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get not found (not a Debian-based system)"
    if os.geteuid() != 0:
        return f"not root (uid {os.geteuid()}): run `apt-get install {' '.join(packages)}` as root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
    ]
    for cmd in steps:
        if say:
            say(f"peers: {' '.join(cmd)}")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(cmd[:2])}` failed: {exc}"
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            return f"`{' '.join(cmd[:2])}` exited {done.returncode}: {tail}"
    still = [p for p in packages if not _present(PACKAGES[p])]
    return f"installed but {', '.join(still)} still missing" if still else ""


# -- measuring a process ----------------------------------------------------------------------


@dataclass
class Usage:
    """What one run of a tool cost."""

    wall: float  # seconds from launch to done
    cpu: float  # user + system seconds, the process and the descendants it reaped
    peak_rss: int  # bytes: the largest sum of the tree's processes' peak RSS (VmHWM) seen
    returncode: int | None = None


class Watched:
    """A launched tool, its process tree's RSS sampled until `finish`."""

    def __init__(self, cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.cmd = list(cmd)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.peak_rss = 0
        self.stderr: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _sample(self) -> None:
        try:
            root = self._psutil.Process(self.proc.pid)
        except self._psutil.Error:
            return
        while not self._stop.is_set():
            try:
                tree = [root.pid, *(p.pid for p in root.children(recursive=True))]
            except self._psutil.Error:
                return
            self.peak_rss = max(self.peak_rss, sum(_high_water_mark(pid) for pid in tree))
            self._stop.wait(0.05)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())
            del self.stderr[:-200]

    def running(self) -> bool:
        return self.proc.poll() is None if self.proc.returncode is None else False

    def finish(self, timeout: float, sig: int | None = None) -> Usage:
        """Wait for the process (after sending *sig*, if given) and reap it with its rusage."""
        done_at = time.perf_counter()
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.kill(self.proc.pid, signal.SIGKILL)
                pid, status, rusage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.01)
        if sig is None:
            done_at = time.perf_counter()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._stop.set()
        for t in self._threads:
            t.join(5)
        # Not rusage's ru_maxrss: it keeps the forked bench's own RSS from before the exec.
        return Usage(done_at - self.started, rusage.ru_utime + rusage.ru_stime, self.peak_rss, self.proc.returncode)

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ChildProcessError):
                self.finish(5, signal.SIGKILL)


def listening_pid(address: str) -> int | None:
    """The local process listening on *address*'s port (``host:port`` or a URL); None when not visible.

    Not visible: a server on another host, in a container, or a process
    psutil may not inspect (not root).
    """
    from urllib.parse import urlsplit

    import psutil

    port = urlsplit(address if "://" in address else f"tcp://{address}").port
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    except (psutil.Error, OSError):
        pass
    return None


@dataclass(frozen=True)
class CPUReading:
    """CPU seconds (user + system) of each watched process, and of the whole machine, at one moment."""

    at: float
    seconds: dict[str, float]
    machine_busy: float


class CPUProbe:
    """Reads the CPU seconds of named processes together, and the machine's busy time (all cores).

    `cores` between two readings is the average number of cores each used
    in between: how much of the machine the broker, the node and the
    shipper took while a rate was measured. A process that is not visible
    (or gone) is left out of the readings.
    """

    def __init__(self, pids: dict[str, int | None]) -> None:
        import psutil

        self._psutil = psutil
        self.procs = {}
        for name, pid in pids.items():
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                self.procs[name] = psutil.Process(pid)

    def with_process(self, name: str, pid: int) -> CPUProbe:
        """A probe that also reads *pid* as *name* (a shipper launched after the probe was made)."""
        probe = CPUProbe({})
        probe.procs = dict(self.procs)
        with contextlib.suppress(self._psutil.Error):
            probe.procs[name] = self._psutil.Process(pid)
        return probe

    def read(self) -> CPUReading:
        seconds = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(self._psutil.Error):
                times = proc.cpu_times()
                seconds[name] = times.user + times.system
        machine = self._psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return CPUReading(time.perf_counter(), seconds, busy)

    @staticmethod
    def cores(start: CPUReading, end: CPUReading) -> dict[str, float]:
        """Average cores each process (and ``machine``: every process) used from *start* to *end*."""
        span = end.at - start.at
        if span <= 0:
            return {}
        out = {name: (end.seconds[name] - start.seconds[name]) / span for name in end.seconds if name in start.seconds}
        out["machine"] = (end.machine_busy - start.machine_busy) / span
        return out


def server_probe() -> CPUProbe:
    """A `CPUProbe` of the bench's broker (``broker``) and Elasticsearch node (``node``), where visible."""
    from .common import ES_URL, KAFKA_BOOTSTRAP

    return CPUProbe({"broker": listening_pid(KAFKA_BOOTSTRAP.split(",")[0]), "node": listening_pid(ES_URL)})


def _high_water_mark(pid: int) -> int:
    """Peak resident bytes of one process since its exec (``VmHWM``); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


# -- rsyslog -----------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(values: Sequence[str]) -> str:
    return "[" + ", ".join(_quote(v) for v in values) + "]"


def _preamble(work: Path) -> str:
    # Internal messages (errors of the modules) go to a file in the work directory, for the report.
    return (
        f'global(workDirectory={_quote(str(work))} maxMessageSize="64k")\n'
        f'*.* action(type="omfile" file={_quote(str(work / "rsyslog.log"))})\n'
    )


def rsyslog_file_to_kafka(path: Path, topic: str, work: Path, bootstrap: str = KAFKA_BOOTSTRAP) -> str:
    """imfile -> omkafka: every line of *path*, as is, one Kafka message, acks=all."""
    return (
        _preamble(work)
        + 'module(load="imfile" mode="inotify")\n'
        + 'module(load="omkafka")\n'
        + 'template(name="raw" type="string" string="%msg%")\n'
        + f'input(type="imfile" file={_quote(str(path))} tag="app" ruleset="tokafka" addMetadata="off")\n'
        + 'ruleset(name="tokafka") {\n'
        + f'  action(type="omkafka" broker={_array(bootstrap.split(","))} topic={_quote(topic)} template="raw"\n'
        + '         topicConfParam=["acks=all"])\n'
        + "}\n"
    )


def rsyslog_kafka_to_es(
    topic: str,
    group: str,
    prefix: str,
    work: Path,
    *,
    batch: int = 2000,
    workers: int = 4,
    bootstrap: str = KAFKA_BOOTSTRAP,
    es_url: str = ES_URL,
) -> str:
    """imkafka -> mmjsonparse -> omelasticsearch, bulk, like ``logpipe ship``.

    Same daily index (``PREFIX-YYYY.MM.dd`` from the record's ``Time``, which
    logpipe writes in UTC), same ``_id`` (the record's ``Id``, as ``create``),
    the message's JSON sent as it came; *batch* messages a bulk request and
    *workers* requests in flight (the shipper's defaults: 2000 and 4).
    """
    from urllib.parse import urlsplit

    es = urlsplit(es_url)
    index = f"{prefix}-%$!Time:1:4%.%$!Time:6:7%.%$!Time:9:10%"
    return (
        _preamble(work)
        + 'module(load="imkafka")\n'
        + 'module(load="mmjsonparse")\n'
        + 'module(load="omelasticsearch")\n'
        + 'template(name="doc" type="string" string="%msg%")\n'
        + f'template(name="index" type="string" string={_quote(index)})\n'
        + 'template(name="id" type="string" string="%$!Id%")\n'
        + f'input(type="imkafka" topic={_quote(topic)} broker={_array(bootstrap.split(","))} '
        + f"consumergroup={_quote(group)}\n"
        + '      confParam=["auto.offset.reset=earliest"] ruleset="toes")\n'
        + 'ruleset(name="toes") {\n'
        + '  action(type="mmjsonparse" cookie="" useRawMsg="on")\n'
        + f'  action(type="omelasticsearch" server={_quote(es.hostname or "127.0.0.1")} '
        + f'serverport="{es.port or 9200}" usehttps="{"on" if es.scheme == "https" else "off"}"\n'
        + '         template="doc" searchIndex="index" dynSearchIndex="on" bulkid="id" dynbulkid="on"\n'
        + '         writeoperation="create" bulkmode="on" esVersion.major="8" maxbytes="100m"\n'
        + f'         queue.type="linkedList" queue.size="{max(100_000, batch * workers * 4)}" '
        + f'queue.dequeueBatchSize="{batch}" queue.workerThreads="{workers}"\n'
        + f"         errorFile={_quote(str(work / 'es-errors.json'))})\n"
        + "}\n"
    )


class Rsyslog:
    """``rsyslogd -n -f CONF -i PIDFILE`` with its own work directory, measured; stopped by its pid."""

    def __init__(self, config: str, work: Path) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.conf = work / "rsyslog.conf"
        self.conf.write_text(config)
        self.pidfile = work / "rsyslogd.pid"
        exe = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        check = subprocess.run([exe, "-N1", "-f", str(self.conf)], capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            raise RuntimeError(f"rsyslog refuses its configuration: {check.stderr.strip()[-500:]}")
        self.watched = Watched([exe, "-n", "-f", str(self.conf), "-i", str(self.pidfile)])

    def stop(self) -> Usage:
        """SIGTERM by pid; the clock stopped when this was called."""
        return self.watched.finish(30, signal.SIGTERM)

    def log(self) -> str:
        parts = []
        for name in ("rsyslog.log", "es-errors.json"):
            path = self.work / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-600:])
        return " | ".join(parts + self.watched.stderr[-3:])


# -- counting what arrived ------------------------------------------------------------------------


def topic_end(topic: str, partitions: int, consumer: Any = None) -> int:
    """Sum of the partitions' end offsets: records appended to *topic* (a fresh topic)."""
    from confluent_kafka import Consumer, TopicPartition

    own = consumer is None
    if own:
        consumer = Consumer({"bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": "logpipe-bench-count"})
    try:
        total = 0
        for p in range(partitions):
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            total += high
        return total
    finally:
        if own:
            consumer.close()


def topic_count(topic: str, expected: int, timeout: float = 120.0) -> tuple[int, int]:
    """Consume *topic* from the start: (messages, distinct message values)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": KAFKA_BOOTSTRAP,
            "group.id": f"logpipe-bench-count-{os.getpid()}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([topic])
    seen: set[int] = set()
    total = 0
    idle_since = time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.5)
            got = [m for m in batch if m.error() is None]
            for m in got:
                seen.add(hash(m.value()))
            total += len(got)
            if got:
                idle_since = time.monotonic()
            elif total >= expected and time.monotonic() - idle_since > 1.0 or time.monotonic() - idle_since > 10.0:
                break
        return total, len(seen)
    finally:
        consumer.close()


def rss_mib(value: int) -> str:
    return f"{value / 1024 / 1024:.0f} MiB"
