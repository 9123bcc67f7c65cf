"""Durable mode: a log call returns once its record is fsynced to a journal, which the exporter delivers from.

With ``LOGPIPE_DURABLE=true`` each exporter gets a `JournalDispatcher`
instead of a `logpipe.dispatch.Dispatcher`. There is no in-memory queue:

* the log call appends the record to the exporter's journal and waits until
  it is on disk. Concurrent callers share one ``write`` and one ``fsync``
  (`logpipe.spool.group.GroupCommit`), so the cost of an fsync is paid per
  batch of callers, not per call;
* the journal *is a spool* (``<LOGPIPE_DURABLE_DIR>/<exporter>``, segments,
  offsets and locks of `logpipe.spool`), and a `SpoolExporter` bound to the
  exporter replays it in a daemon thread (`logpipe.spool.Replayer` on the one
  in-flight window). A record leaves the journal only once the exporter
  acknowledged it: when the exporter fails, its records simply stay where
  they are, so durable mode has no separate fallback spool;
* a process that starts finds the journal of earlier processes (crashed,
  SIGKILLed, or ended during an outage) and delivers it first: segments are
  replayed oldest first, payloads byte for byte, so ``Id`` is unchanged.

Size cap, full policy, segment size, replay batch and retry pacing come from
the spool's settings (``LOGPIPE_SPOOL_*``); a record refused by the full
policy is counted as ``dropped`` and the log call returns. A disk that fails
the write is reported on stderr and counted as ``failed``: a log call never
raises.

Fork: a child writes its own segments in the same directory; the process
that holds the directory's replay lock delivers them (the lock passes on when
that process ends).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Mapping

from . import config
from .config import Settings
from .dispatch import DispatchStats
from .exporters.base import Exporter
from .exporters.spool import SpoolExporter, SpoolOptions
from .plugins import options_prefix
from .record import Record
from .report import Reporter
from .spool.group import GroupCommit

__all__ = ["JournalDispatcher", "open_journal"]


def open_journal(name: str, settings: Settings, environ: Mapping[str, str] | None = None) -> SpoolExporter:
    """The journal of exporter *name*: the spool's settings, ``<durable_dir>/<name>``, fsync at every append."""
    overrides = {"dir": settings.durable_dir, "fsync": "batch", "replay": True}
    options = config.load(SpoolOptions, options_prefix("spool"), overrides, environ)
    return SpoolExporter(options)


class JournalDispatcher:
    """Durable mode's stand-in for `Dispatcher` in front of one exporter; see the module docstring.

    ``stats()`` keeps the dispatcher's names: ``submitted`` log calls,
    ``sent`` records the exporter acknowledged from the journal (this
    process's replay, which includes what earlier processes left),
    ``dropped`` refused by the journal's full policy (or logged after
    shutdown), ``failed`` not written (disk errors) or given up on as dead
    letters, ``queued`` callers waiting for the next group commit, ``waiting``
    records in the journal not delivered yet (any process's).
    """

    def __init__(
        self,
        exporter: Exporter,
        journal: SpoolExporter,
        *,
        name: str = "",
        max_wait: float = 0.002,
        max_batch: int = 1024,
    ) -> None:
        self.name = name or type(exporter).__name__
        self.exporter = exporter
        #: The journal, under the name `Pipeline` shows and asks for the exit line's backlog.
        self.fallback = journal
        self.journal = journal
        self._commit = GroupCommit(self._write, max_wait=max_wait, max_batch=max_batch)
        self._lock = threading.Lock()
        self._submitted = self._dropped = self._failed = 0
        self._stopped = False
        self._report = Reporter(f"{self.name}: ")
        journal.bind_primary(self.name, exporter)  # makes <durable_dir>/<name> and starts delivering
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    @property
    def overflow(self) -> str:
        """What a call does when the journal is full: the spool's full policy, not a queue's."""
        return self.journal.options.full

    def submit(self, record: Record) -> bool:
        """Return once *record* is on disk in the journal; False when it was not written (counted)."""
        with self._lock:
            self._submitted += 1
            if self._stopped:
                self._dropped += 1
                return False
        try:
            return self._commit.append(record.payload)
        except OSError as exc:
            with self._lock:
                self._failed += 1
            self._report(f"journal {self.journal.directory}: {type(exc).__name__}: {exc}; record not written")
            return False

    def _write(self, payloads: list[bytes]) -> int:
        return self.journal.spool.append(payloads)

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Wait until the journal is delivered, or the exporter fails (the records stay on disk); True then."""
        deadline = time.monotonic() + timeout
        ok = self.journal.drain(timeout)
        return self.exporter.force_flush(max(0.0, deadline - time.monotonic())) and ok

    def shutdown(self, timeout: float = 10.0) -> None:
        """Deliver what can be within *timeout*, stop the replay, shut the exporter down; the rest waits on disk."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.journal.drain(timeout)
        self.journal.shutdown(max(0.0, deadline - time.monotonic()))
        self.exporter.shutdown(max(0.0, deadline - time.monotonic()))

    def stats(self) -> DispatchStats:
        journal = self.journal.stats()
        try:
            waiting = self.journal.backlog()
        except Exception:  # a stats call never raises for a journal being rewritten underneath
            waiting = 0
        with self._lock:
            return DispatchStats(
                exporter=self.name,
                submitted=self._submitted,
                sent=journal.replayed - journal.rejected,
                dropped=self._dropped + journal.dropped,
                spilled=0,
                failed=self._failed + journal.rejected,
                queued=self._commit.pending(),
                in_flight=0,
                waiting=waiting,
            )

    def group_commits(self) -> tuple[int, int]:
        """Batches written (one write and one fsync each) and the records they held, by this process."""
        return self._commit.batches, self._commit.records

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._submitted = self._dropped = self._failed = 0
        self._commit.after_fork()
        self.exporter.after_fork()
        self.journal.after_fork()


def _after_fork(ref: weakref.ref[JournalDispatcher]) -> None:
    target = ref()
    if target is not None:
        target._after_fork_in_child()
