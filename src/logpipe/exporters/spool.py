"""The ``spool`` exporter: the durable fallback of network exporters.

A network exporter (Kafka, Elasticsearch) names ``spool`` as its
``default_fallback``. Records it cannot deliver are appended to a spool
directory of their own, ``<LOGPIPE_SPOOL_DIR>/<primary name>``, and a daemon
thread replays them into that primary when it answers again, oldest first,
including whatever a previous process left there (a crash, an outage across a
restart). The on-disk format and its guarantees are described in
`logpipe.spool`.

While the primary keeps failing, replay attempts are spaced by a
`logpipe.backoff.Backoff`: ``replay_interval`` seconds at first, doubling
(with jitter) up to ten times that, back to ``replay_interval`` as soon as a
replay makes progress. A record the primary refuses ``max_attempts`` times
while taking others is written to ``rejected.ndjson`` in the spool directory
as a dead letter (`logpipe.deadletter`).

Durability: every append is one ``write``; by default (``fsync=batch``) it is
also fsynced before `export` returns SUCCESS, so a record the dispatcher
counts as ``spilled`` survives a power cut. ``interval`` and ``never`` trade
that for speed, as with the file exporter.

Only one process replays a directory at a time (an ``flock`` on
``replay.lock``); a forked child writes its own segments and contends for the
lock, so it takes over replaying if the parent exits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..backoff import Backoff
from ..config import at_least, setting
from ..record import Record
from ..spool import DirectoryLock, FsyncPolicy, FullPolicy, Replayer, Spool, SpoolStats, Step, report
from ..spool.backlog import SpoolCounter
from .base import Exporter, ExportResult

__all__ = ["DEFAULT_DIR", "SpoolExporter", "SpoolOptions"]

DEFAULT_DIR = Path("logs") / "spool"


@dataclass(frozen=True)
class SpoolOptions:
    dir: Path = setting(DEFAULT_DIR, "Spool root; each primary exporter gets the subdirectory <dir>/<name>.")
    max_bytes: int = setting(1 << 30, "Disk budget of one spool directory, in bytes.", check=at_least(1))
    segment_bytes: int = setting(
        16 << 20, "Roll to a new segment file past this many bytes (the unit drop_oldest deletes).", check=at_least(1)
    )
    full: FullPolicy = setting(
        "drop_oldest", "At max_bytes: drop_oldest (delete the oldest segment) or drop_newest (refuse new records)."
    )
    fsync: FsyncPolicy = setting("batch", "When to fsync appends: batch (every export), interval, never.")
    fsync_interval: float = setting(1.0, "Seconds between fsyncs with fsync=interval.", check=at_least(0))
    replay: bool = setting(True, "Replay the spool into its primary exporter in a background thread.")
    replay_interval: float = setting(
        1.0,
        "Seconds between replay attempts while the primary fails (and between scans when idle).",
        check=at_least(0.001),
    )
    replay_batch: int = setting(512, "Most records handed to the primary in one replay export.", check=at_least(1))
    max_attempts: int = setting(
        5,
        "A record the primary refuses this many times (taking others) becomes a dead letter in rejected.ndjson "
        "(0: never).",
        check=at_least(0),
    )


class SpoolExporter(Exporter):
    """Appends records to a spool directory and replays them into the bound primary."""

    Options = SpoolOptions
    options: SpoolOptions

    def __init__(self, options: SpoolOptions | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.directory = Path(o.dir)
        self.primary: Exporter | None = None
        self.primary_name = ""
        self.spool = self._make_spool()
        self._lock = DirectoryLock(self.directory)
        self._counter = SpoolCounter()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._closed = False
        self._init_passes()

    def export(self, batch: Sequence[Record]) -> ExportResult:
        if self._closed:
            return ExportResult.FAILURE
        accepted = self.spool.append([r.payload for r in batch])
        return ExportResult.SUCCESS if accepted == len(batch) else ExportResult.FAILURE

    def force_flush(self, timeout: float = 10.0) -> bool:
        self.spool.flush()
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until a replay pass begun after this call ends with nothing more this process can do now.

        That is: the directory had nothing left to deliver, or the primary
        failed (what it did not take stays on disk, replayed later), or another
        process holds the replay lock (it delivers). False when *timeout*
        passed first, or nobody replays here.
        """
        deadline = time.monotonic() + timeout
        with self._passes:
            after = self._begun
            self._wake.set()
            while self._quiet <= after:
                left = deadline - time.monotonic()
                thread = self._thread
                if left <= 0 or thread is None or not thread.is_alive():
                    return False
                self._passes.wait(min(left, 0.1))  # re-checks the thread: it may have ended without a word
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop replaying and close the spool.

        A replay export still running after *timeout* is abandoned, not
        interrupted: its records stay pending (progress only moves after the
        primary acknowledged) and are replayed by the next process.
        """
        self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            self._lock.release()
        self.spool.close()

    def after_fork(self) -> None:
        self.spool.after_fork()
        self._lock.after_fork()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._init_passes()
        self._thread = None
        if self.primary is not None and self.options.replay and not self._closed:
            self._start_replay()

    def bind_primary(self, name: str, primary: Exporter) -> None:
        """Use ``<dir>/<name>`` and start replaying into *primary*."""
        self.primary, self.primary_name = primary, name
        self.directory = Path(self.options.dir) / name
        self.spool.close()
        self.spool = self._make_spool()
        self._lock = DirectoryLock(self.directory)
        if self.options.replay:
            self._start_replay()

    def backlog(self) -> int:
        """Records waiting in this spool directory (written by any process), counted incrementally."""
        return self._counter.backlog(self.directory).records

    def backlog_hint(self) -> str:
        into = f" --exporter {self.primary_name}" if self.primary_name else ""
        return (
            f"in {self.directory.resolve()}; they are sent when the application starts again, "
            f"or now with: logpipe replay {self.directory.resolve()}{into}"
        )

    def stats(self) -> SpoolStats:
        return self.spool.stats()

    def describe(self) -> str:
        into = f", replayed into {self.primary_name}" if self.primary is not None and self.options.replay else ""
        return f"spool {self.directory.resolve()}{into}"

    # -- internals ------------------------------------------------------------

    def _make_spool(self) -> Spool:
        o = self.options
        spool = Spool(
            self.directory,
            max_bytes=o.max_bytes,
            segment_bytes=o.segment_bytes,
            full=o.full,
            fsync=o.fsync,
            fsync_interval=o.fsync_interval,
        )
        spool.on_append = self._wake_replayer
        return spool

    def _init_passes(self) -> None:
        #: Replay steps begun, and the last one that left nothing to do now (see `drain`).
        self._passes = threading.Condition(threading.Lock())
        self._begun = self._quiet = 0

    def _step_begins(self) -> int:
        with self._passes:
            self._begun += 1
            return self._begun

    def _step_was_quiet(self, number: int) -> None:
        with self._passes:
            self._quiet = number
            self._passes.notify_all()

    def _wake_replayer(self) -> None:
        self._wake.set()

    def _start_replay(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._replay_loop, name=f"logpipe-spool-{self.primary_name}", daemon=True
        )
        self._thread.start()

    def _replay_loop(self) -> None:
        """Replay while this process holds the directory lock; otherwise keep asking for it."""
        assert self.primary is not None
        o = self.options
        stop, wake, lock = self._stop, self._wake, self._lock
        backoff = Backoff(o.replay_interval, 10 * o.replay_interval, stop=stop)
        replayer: Replayer | None = None
        while not stop.is_set():
            number = self._step_begins()
            if not lock.acquire():
                self._step_was_quiet(number)
                stop.wait(o.replay_interval)
                continue
            if replayer is None:  # made once the lock is ours: what it reads, it owns
                replayer = Replayer(self.spool, self.primary, batch=o.replay_batch, max_attempts=o.max_attempts)
            try:
                step = replayer.step()
            except OSError as exc:  # the disk, not the primary: back off, then start over from the offsets
                step, replayer = Step.BLOCKED, None
                report(f"replay of {self.directory}: {type(exc).__name__}: {exc}")
            if step is not Step.PROGRESS:
                self._step_was_quiet(number)
            if step is Step.PROGRESS:
                backoff.reset()
            elif step is Step.IDLE:
                backoff.reset()
                wake.wait(o.replay_interval)
                wake.clear()
            else:
                backoff.wait()
        if self._closed:
            lock.release()
