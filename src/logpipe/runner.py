"""What every long-running loop of logpipe shares: stopping with a grace time, progress ticks, errors in words.

`Tailer` (``logpipe tail``) and `Shipper` (``logpipe ship``) are loops run
in a thread of their own and stopped from another thread or a signal
handler. They stop the same way (finish the work in hand within
``shutdown_timeout``, then give up on what is still out), tell their progress
the same way (a callback every ``status_interval`` seconds, never allowed to
break the loop) and count problems the same way (``errors`` and the last one
in words). `Runner` is that part, written once; `RunStats` the counters every
display reads.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .backoff import Backoff

__all__ = ["RunStats", "Runner"]


@dataclass
class RunStats:
    """Counters every long-running command has; commands add their own."""

    #: Problems seen (retries, dead letters, failed commits); the last one in words.
    errors: int = 0
    last_error: str | None = None
    state: str = "starting"
    started: float = field(default_factory=time.monotonic)
    #: When the first record was taken in and the last one accounted for (monotonic).
    first_at: float | None = None
    last_at: float | None = None


S = TypeVar("S", bound=RunStats)


class Runner(Generic[S]):
    """Stop, tick and error bookkeeping of one loop; subclasses implement the loop itself."""

    def __init__(
        self,
        stats: S,
        *,
        shutdown_timeout: float,
        status_interval: float,
        progress: Callable[[S], None] | None = None,
    ) -> None:
        self.stats = stats
        self._shutdown_timeout = shutdown_timeout
        self._status_interval = status_interval
        self._progress = progress
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._next_tick: float | None = None

    # -- control ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the work in hand and return (thread- and signal-safe)."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self._shutdown_timeout
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def out_of_time(self) -> bool:
        """A stop was asked for and its grace time is over: give up on what is still out."""
        return self._stop_deadline is not None and time.monotonic() >= self._stop_deadline

    def backoff(self, initial: float, maximum: float) -> Backoff:
        """A `Backoff` whose waits end when this runner is stopped."""
        return Backoff(initial, max(initial, maximum), stop=self._stop)

    # -- reporting --------------------------------------------------------------------------

    def tick(self, force: bool = False) -> None:
        """Call the progress callback if ``status_interval`` has passed (or *force*); it cannot break the loop."""
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and self._next_tick is not None and now < self._next_tick:
            return
        self._next_tick = now + self._status_interval
        self.before_tick(force)
        with contextlib.suppress(Exception):  # a display must not stop the work
            self._progress(self.stats)

    def before_tick(self, force: bool) -> None:
        """Refresh what a tick shows (the shipper's consumer lag); nothing by default."""

    def error(self, text: str) -> None:
        """Count a problem and keep its words for the display."""
        self.stats.errors += 1
        self.stats.last_error = text
