"""Group commit: concurrent appends to a spool share one write and one fsync.

Durable mode (`logpipe.journal`) makes every log call wait until its record
is fsynced. An fsync costs about as much for one line as for a thousand, so
callers that arrive together are written together:

* a caller adds its payload to the *open batch* and waits on a condition
  until that batch is written and synced;
* when no batch is being written, the first waiting caller of the open batch
  becomes its *leader*: it waits for company, closes the batch (later callers
  start the next one), writes it with one ``Spool.append`` (one ``write``, one
  ``fsync``) and wakes everybody;
* while a batch is being written, new callers gather in the next one, so under
  load batches grow by themselves. The leader's wait is for the callers of the
  batch just written, who are on their way back with their next record: it
  waits until the batch is as large as the previous one (at most
  ``max_batch``), never longer than ``max_wait``. Without it, batches
  alternate between "everybody but the last leader" and "the last leader
  alone". A lone thread never waits (its previous batch held one record).

No thread of its own: the leader is an application thread that had to wait
anyway. Order: a thread's records reach the journal in the order it logged
them (it waits for each); records of concurrent threads in batch order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["GroupCommit"]


class _Batch:
    """Payloads written together, and what became of them."""

    __slots__ = ("accepted", "done", "error", "payloads")

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.done = False
        self.accepted = False
        self.error: BaseException | None = None


class GroupCommit:
    """Batches concurrent `append` calls into one call of *write* each; see the module docstring.

    *write* takes the payloads of one batch and returns how many it accepted
    (all or none, as `logpipe.spool.Spool.append` does); it returns only once
    they are on disk.
    """

    def __init__(self, write: Callable[[list[bytes]], int], *, max_wait: float = 0.002, max_batch: int = 1024) -> None:
        self._write = write
        self.max_wait = max_wait
        self.max_batch = max(1, max_batch)
        self.after_fork()

    def after_fork(self) -> None:
        """Start afresh (in a forked child: the parent's waiting callers are the parent's business)."""
        self._cond = threading.Condition(threading.Lock())
        self._open = _Batch()
        self._writing = False
        self._last_size = 1
        self._wanted = 0  # while a leader waits for company: the batch size it waits for
        #: Batches written (one write and one fsync each) and the records they held, since start.
        self.batches = 0
        self.records = 0

    def append(self, payload: bytes) -> bool:
        """Return once *payload* is on disk (True) or was refused (False); raise what the write raised."""
        with self._cond:
            batch = self._open
            batch.payloads.append(payload)
            if len(batch.payloads) == self._wanted:
                self._cond.notify_all()  # the leader waiting for company may go
            while self._writing and not batch.done:
                self._cond.wait()
            lead = not batch.done
            if lead:
                self._close(batch)
        if lead:
            self._commit(batch)
        if batch.error is not None:
            raise batch.error
        return batch.accepted

    def pending(self) -> int:
        """Records waiting for the next write (callers blocked in `append`)."""
        with self._cond:
            return len(self._open.payloads)

    def _close(self, batch: _Batch) -> None:
        """As the leader, with the lock held: wait for company, then make the next batch the open one."""
        self._writing = True
        self._wanted = min(self._last_size, self.max_batch)
        if self.max_wait > 0 and len(batch.payloads) < self._wanted:
            deadline = time.monotonic() + self.max_wait
            while len(batch.payloads) < self._wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        self._wanted = 0
        self._last_size = len(batch.payloads)
        self._open = _Batch()

    def _commit(self, batch: _Batch) -> None:
        """As the leader, without the lock: write the batch, then wake its callers and the next leader."""
        try:
            batch.accepted = self._write(batch.payloads) == len(batch.payloads)
        except Exception as exc:  # every caller of the batch must hear of it, not only the leader
            batch.error = exc
        finally:
            with self._cond:
                batch.done = True
                self._writing = False
                self.batches += 1
                self.records += len(batch.payloads)
                self._cond.notify_all()
