"""Run an exporter in a child process, so its client's Python code never holds the application's GIL.

Why: the Kafka exporter's client, kafka-python, is pure Python. Its sender
thread and logpipe's worker share the application's GIL, and each burst of
their work (building record batches, resolving 512 futures when an
acknowledgement arrives) delays whatever log call is running at that moment:
the benchmark measured a p99 of about 100 us per call with the exporter in
process against about 20 us with one that discards. In a child process the
client runs on another core; the application's process only takes batches off
its queue and writes them to a pipe.

`ProcessExporter` is the application's side: an `Exporter` that forwards each
batch to a child (`main`, run by the same Python) which builds the real
exporter from the same class and options and answers with each batch's
outcome. Batches are pipelined (`Exporter.begin`), so the child's exporter
keeps as many batches in flight as it would in process.

What the application keeps: its queue, overflow policy, counters and the
fallback (spool). A child that dies or hangs fails its outstanding batches,
which go to the fallback like any failed export, and a new child is started
on the next batch; starts are spaced by a `logpipe.backoff.Backoff` from
``respawn_backoff`` seconds, doubling (with jitter) up to a minute while
children keep dying, back to the start once a child answers a batch. The
child ignores SIGINT/SIGTERM (a Ctrl-C reaches the whole process group) and
lives exactly as long as its stdin: when the application exits, even killed,
the pipe closes and the child flushes and exits. An exporter that cannot run
in a child (its class is not importable there, Python cannot be started)
runs in process instead, with one line on stderr saying why.

The protocol (frames on the child's stdin and stdout) is in `process_frames`,
the child's main loop in `process_child`; this module is the application's
side.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backoff import Backoff
from ..record import Record
from ..report import Reporter
from . import process_frames as wire
from .base import Done, Exporter, ExportResult, Outcome, PartialFailure, Pending
from .process_child import PATH_ENV, main

__all__ = ["ProcessExporter", "isolate", "main"]

#: Longest wait between starts of a child that keeps dying.
_RESPAWN_MAX = 60.0

#: Children of a parent that forked: kept referenced so Popen's finalizer never runs in the fork.
_orphans: list[Any] = []


def isolate(exporter: Exporter, choice: str) -> Exporter:
    """*exporter* itself, or wrapped to run in a child process, per ``LOGPIPE_ISOLATION``.

    ``auto`` follows the exporter's own `Exporter.isolation` (the Kafka exporter's depends on its client).
    """
    wanted = exporter.isolation if choice == "auto" else choice
    if wanted != "process" or isinstance(exporter, ProcessExporter):
        return exporter
    return ProcessExporter(exporter)


class ProcessExporter(Exporter):
    """Forwards batches to *inner*'s class and options running in a child process.

    *inner* itself never exports: it was built here so its options were
    validated at configure time, and it answers `describe`. It is also the
    exporter used in process when no child can be started.
    """

    def __init__(self, inner: Exporter, *, start_timeout: float = 30.0, respawn_backoff: float = 1.0) -> None:
        super().__init__(inner.options)
        self.inner = inner
        self.max_in_flight = inner.max_in_flight
        self.default_fallback = inner.default_fallback  # type: ignore[misc]
        self._start_timeout = start_timeout
        #: Spacing of child starts; None: start one whenever needed (tests).
        self._respawn = Backoff(respawn_backoff, max(respawn_backoff, _RESPAWN_MAX)) if respawn_backoff > 0 else None
        #: How long a batch's answer may take before the child counts as hung.
        self._answer_timeout = 2 * float(getattr(inner.options, "delivery_timeout", 30.0)) + 30.0
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # child creation and frame writes
        self._child: _Child | None = None
        self._next_start: float | None = None
        self._seq = 0
        self._in_process = False
        self._closed = False

    # -- the exporter contract -------------------------------------------------

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        return self.begin(batch).wait()

    def begin(self, batch: Sequence[Record]) -> Pending[Outcome]:
        with self._lock:
            child = self._ready_child()
            if child is None:
                if self._in_process:
                    return self.inner.begin(batch)
                return Done(ExportResult.FAILURE)
            seq = self._next()
            try:
                child.send(wire.BATCH, seq, wire.encode_batch(batch))
            except OSError as exc:
                self._lost(child, f"cannot write to it: {exc}")
                return Done(ExportResult.FAILURE)
        return _Ticket(self, child, seq, batch)

    def force_flush(self, timeout: float = 10.0) -> bool:
        if self._in_process:
            return self.inner.force_flush(timeout)
        if self._child is None:
            return True  # no child, nothing buffered in one (failed batches already went to the fallback)
        answer = self._ask(wire.FLUSH, marshal.dumps(timeout), timeout)
        return answer is not None and bool(marshal.loads(answer))

    def shutdown(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
            seq = self._next()
        if self._in_process:
            self.inner.shutdown(timeout)
        if child is None:
            return
        with contextlib.suppress(OSError):
            child.send(wire.CLOSE, seq, marshal.dumps(max(0.0, timeout - 1.0)))
            child.answer(seq, max(0.0, deadline - time.monotonic()))
        child.stop(max(0.0, deadline - time.monotonic()))

    def after_fork(self) -> None:
        """The child process belongs to the parent: forget it; this process starts its own when needed."""
        if self._child is not None:
            self._child.forget()
        in_process = self._in_process
        self._init_state()
        self._in_process = in_process
        if in_process:
            self.inner.after_fork()

    def bind_primary(self, name: str, primary: Exporter) -> None:
        self.inner.bind_primary(name, primary)

    def describe(self) -> str:
        where = "in process" if self._in_process else "in a child process"
        return f"{self.inner.describe()} ({where})"

    def stats(self) -> Any:
        """The child exporter's own ``stats()``, if it has any; None when there is no child."""
        if self._in_process:
            return getattr(self.inner, "stats", lambda: None)()
        answer = self._ask(wire.STATS, b"", 10.0)
        return pickle.loads(answer) if answer else None

    # -- the child ---------------------------------------------------------------

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _ready_child(self) -> _Child | None:
        """With the lock held: the running child, started now if needed; None while backing off."""
        if self._closed or self._in_process:
            return None
        if self._child is not None:
            if self._child.alive():
                return self._child
            self._lost(self._child, "exited")
        if self._next_start is not None and time.monotonic() < self._next_start:
            return None
        if self._respawn is not None:
            self._next_start = time.monotonic() + self._respawn.delay()
        unusable = _no_python()
        if unusable:
            self._run_in_process(unusable)
            return None
        try:
            hello = pickle.dumps((type(self.inner), self.inner.options))
        except Exception as exc:
            self._run_in_process(f"its class or options cannot be pickled ({exc})")
            return None
        try:
            child = _Child.start(hello, self._next(), self._start_timeout)
        except _Refused as exc:
            self._run_in_process(str(exc))
            return None
        except OSError as exc:
            _report(f"{self.inner.describe()}: cannot start a child process ({exc}); retrying")
            return None
        self._child = child
        return child

    def _run_in_process(self, reason: str) -> None:
        self._in_process = True
        _report(f"{self.inner.describe()}: cannot run in a child process, exporting in process: {reason}", force=True)

    def _lost(self, child: _Child, reason: str) -> None:
        """Give up on *child*: its outstanding batches fail; the next batch starts a new one."""
        with contextlib.suppress(Exception):
            _report(f"{self.inner.describe()}: child process {child.pid} lost ({reason}); restarting it")
        if self._child is child:
            self._child = None
        child.stop(0.0)

    def _ask(self, kind: int, body: bytes, timeout: float) -> bytes | None:
        """Send a request to the child (after the batches already sent) and wait for its answer."""
        with self._lock:
            child = self._child
            if child is None:
                return None
            seq = self._next()
            try:
                child.send(kind, seq, body)
            except OSError:
                return None
        answer = child.answer(seq, timeout)
        return None if answer is None else answer[1]

    def _outcome(self, child: _Child, seq: int, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        answer = child.answer(seq, self._answer_timeout)
        if answer is None:
            with self._lock:
                self._lost(child, "exited" if not child.alive() else "no answer in time")
            return ExportResult.FAILURE
        if self._respawn is not None and self._respawn.failures:
            with self._lock:  # this child works: a later death restarts it without delay
                self._respawn.reset()
                self._next_start = None
        return wire.decode_outcome(answer[1], batch)


@dataclass(frozen=True)
class _Ticket:
    exporter: ProcessExporter
    child: _Child
    seq: int
    batch: Sequence[Record]

    def wait(self) -> ExportResult | PartialFailure:
        return self.exporter._outcome(self.child, self.seq, self.batch)


class _Refused(Exception):
    """The child started but could not build the exporter."""


class _Child:
    """One child process and the two pipes to it; answers are matched to requests by sequence number."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.pid = proc.pid
        self._stdin = proc.stdin
        self._stdout = proc.stdout.fileno()
        self._read_lock = threading.Lock()
        self._buffer = bytearray()
        self._answers: dict[int, tuple[int, bytes]] = {}
        self._eof = False

    @classmethod
    def start(cls, hello: bytes, seq: int, timeout: float) -> _Child:
        env = dict(os.environ)
        env[PATH_ENV] = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.Popen(
            [sys.executable, "-c", "from logpipe.exporters.process_child import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=env,
            start_new_session=True,
        )
        child = cls(proc)
        _grow_pipe(proc.stdin)
        child.send(wire.HELLO, seq, hello)
        answer = child.answer(seq, timeout)
        if answer is None or answer[0] != wire.READY:
            reason = answer[1].decode(errors="replace") if answer else "no answer to HELLO"
            child.stop(1.0)
            raise _Refused(reason)
        return child

    def send(self, kind: int, seq: int, body: bytes) -> None:
        """Write one frame (the caller serialises writers)."""
        wire.write(self._stdin.fileno(), kind, seq, body)

    def answer(self, seq: int, timeout: float) -> tuple[int, bytes] | None:
        """The (kind, body) answered to request *seq*; None if the child died or took longer than *timeout*."""
        deadline = time.monotonic() + timeout
        with self._read_lock:
            while seq not in self._answers:
                left = deadline - time.monotonic()
                if self._eof or left <= 0 or not self._read(left):
                    return None
            return self._answers.pop(seq)

    def _read(self, timeout: float) -> bool:
        """Read what the child wrote within *timeout*; False on end of file or timeout."""
        ready, _, _ = select.select([self._stdout], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(self._stdout, 1 << 16)
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        for kind, seq, body in wire.take_frames(self._buffer):
            self._answers[seq] = (kind, body)
        return True

    def alive(self) -> bool:
        return not self._eof and self.proc.poll() is None

    def stop(self, timeout: float) -> None:
        """Close the pipes (the child flushes and exits on end of input), then wait, then kill."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5.0)
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # type: ignore[union-attr]

    def forget(self) -> None:
        """In a forked process: close this process's copies of the pipes, leave the child to its parent."""
        with contextlib.suppress(OSError):
            os.close(self._stdin.fileno())
        with contextlib.suppress(OSError):
            os.close(self._stdout)
        _orphans.append(self.proc)


def _no_python() -> str:
    """Why this process cannot start ``sys.executable`` as a Python child; empty when it can.

    An embedding server (uWSGI) or a frozen application reports its own
    binary as ``sys.executable``; starting that with ``-c`` would not run Python.
    """
    if getattr(sys, "frozen", False):
        return "a frozen application has no Python interpreter to start"
    name = os.path.basename(sys.executable or "").lower()
    if "py" not in name:
        return f"sys.executable ({sys.executable or 'empty'}) is not a Python interpreter"
    return ""


def _grow_pipe(pipe: Any) -> None:
    """Ask Linux for a 1 MiB pipe: a whole batch fits, so the worker writes it in one go."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), set_size, 1 << 20)


#: One line on stderr, at most every 10 s unless forced (never through logging, which may feed this exporter).
_report = Reporter()
