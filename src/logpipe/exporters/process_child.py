"""The child's side of a `ProcessExporter`: build the exporter, serve its batches until CLOSE or end of input.

Run as ``python -c "from logpipe.exporters.process_child import main; main()"``
by the parent (`logpipe.exporters.process`). It reads frames on stdin
(`process_frames`) and writes answers on stdout, in the order asked: batches
are begun as they arrive (so the exporter keeps as many in flight as it would
in process) and their outcomes awaited by a second thread.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import queue
import signal
import sys
import threading
from typing import Any

from ..record import Record
from .base import Exporter, ExportResult, Outcome, Pending
from .process_frames import (
    BATCH,
    CLOSE,
    CLOSED,
    FLUSH,
    FLUSHED,
    HELLO,
    READY,
    REFUSED,
    RESULT,
    STATS,
    STATS_OF,
    decode_batch,
    encode_outcome,
    read_frames,
    write,
)

__all__ = ["PATH_ENV", "main"]

#: Environment variable carrying the application's sys.path to the child (same imports, same plugins).
PATH_ENV = "LOGPIPE_CHILD_SYS_PATH"


def main() -> None:
    """Serve one exporter over stdin/stdout until CLOSE or end of input."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    path = os.environ.get(PATH_ENV)
    if path:
        sys.path[:] = path.split(os.pathsep)
    out = _Parent(os.dup(1))
    os.dup2(2, 1)  # a stray print() in an exporter must not corrupt the frames
    frames = read_frames(0)
    first = next(frames, None)
    if first is None or first[0] != HELLO:
        return
    try:
        cls, options = pickle.loads(first[2])
        exporter: Exporter = cls(options)
    except Exception as exc:
        out.tell(REFUSED, first[1], f"{type(exc).__name__}: {exc}".encode())
        return
    out.tell(READY, first[1], b"")
    work: queue.SimpleQueue[tuple[int, int, Any, Any]] = queue.SimpleQueue()
    answerer = threading.Thread(target=_answer, args=(exporter, work, out), name="logpipe-answer")
    answerer.start()
    for kind, seq, body in frames:
        if kind == BATCH:
            batch = decode_batch(body)
            try:
                pending: Pending[Outcome] | None = exporter.begin(batch)
            except Exception:
                pending = None
            work.put((kind, seq, batch, pending))
        elif kind == CLOSE:
            work.put((kind, seq, None, marshal.loads(body)))
            break
        else:
            work.put((kind, seq, None, body))
    else:  # the application went away without CLOSE: flush what we have and go
        work.put((CLOSE, 0, None, 10.0))
    answerer.join()


class _Parent:
    """The pipe to the application. Once the application is gone (SIGKILL) answers are dropped, quietly:
    the child still delivers what it has and closes the exporter when its input ends."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.gone = False

    def tell(self, kind: int, seq: int, body: bytes) -> None:
        if self.gone:
            return
        try:
            write(self.fd, kind, seq, body)
        except OSError:  # EPIPE: nobody reads any more
            self.gone = True


def _answer(exporter: Exporter, work: queue.SimpleQueue[tuple[int, int, Any, Any]], out: _Parent) -> None:
    """Answer requests in the order they arrived: outcomes of batches, flushes, stats, close."""
    while True:
        kind, seq, batch, extra = work.get()
        if kind == BATCH:
            out.tell(RESULT, seq, _outcome(batch, extra))
        elif kind == FLUSH:
            ok = _safely(False, exporter.force_flush, marshal.loads(extra))
            out.tell(FLUSHED, seq, marshal.dumps(bool(ok)))
        elif kind == STATS:
            stats = _safely(None, getattr(exporter, "stats", lambda: None))
            out.tell(STATS_OF, seq, pickle.dumps(stats))
        elif kind == CLOSE:
            _safely(None, exporter.shutdown, extra)
            out.tell(CLOSED, seq, b"")
            return


def _outcome(batch: list[Record], pending: Pending[Outcome] | None) -> bytes:
    """Wait for a batch's outcome (FAILURE if it raised) and encode it for the parent."""
    result: Any = ExportResult.FAILURE
    if pending is not None:
        result = _safely(ExportResult.FAILURE, pending.wait)
    return encode_outcome(batch, result)


def _safely(default: Any, call: Any, *args: Any) -> Any:
    """``call(*args)``, or *default* (and a line on stderr) if it raises: the child must keep answering."""
    try:
        return call(*args)
    except Exception as exc:
        with contextlib.suppress(Exception):
            print(f"logpipe: exporter raised {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return default
