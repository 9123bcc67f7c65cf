"""The one retry delay of logpipe: exponential, jittered, and interruptible by a shutdown.

Every loop that waits before trying again (a bulk request Elasticsearch did
not answer, records Kafka did not acknowledge, a dead-letter destination that
refused, an exporter child that keeps dying) uses a `Backoff`, so that all of
them double the same way, spread out the same way, and stop waiting the
moment a shutdown is asked for.

Why jitter: after a broker or node restart, every tailer, shipper and
application retries on the same schedule; spreading each delay over
``[(1 - jitter) * d, d]`` keeps them from arriving together (AWS's "equal
jitter" family). Why an `threading.Event`: a plain ``time.sleep`` in a retry
loop makes Ctrl-C or SIGTERM wait out the whole delay.
"""

from __future__ import annotations

import random
import threading

__all__ = ["Backoff"]


class Backoff:
    """Delays of *initial*, then twice that, and so on up to *maximum*, each shortened by up to *jitter*.

    An *initial* of 0 retries at once, every time (a setting that allows 0 means "no wait").

    `delay` gives the next wait and advances; `reset` goes back to *initial*
    after a success; `wait` sleeps the next delay unless *stop* is set first.
    Not thread-safe: one retry loop owns one Backoff.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: float = 0.2,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if initial < 0 or maximum < initial:
            raise ValueError(f"need 0 <= initial <= maximum, got initial={initial!r} maximum={maximum!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.stop = stop if stop is not None else threading.Event()
        self._rng = rng or random.Random()
        self._next = initial
        #: Delays handed out since the last `reset`: how many attempts in a row failed.
        self.failures = 0

    def peek(self) -> float:
        """The delay `delay` would give next, before jitter (for messages: "retrying in 2s")."""
        return self._next

    def delay(self) -> float:
        """The next delay in seconds; the one after it doubles, up to the maximum."""
        base = self._next
        self._next = min(self._next * 2, self.maximum)
        self.failures += 1
        return base * (1 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Back to the initial delay: the last attempt succeeded."""
        self._next = self.initial
        self.failures = 0

    def wait(self) -> bool:
        """Sleep the next delay; False when `stop` was set (before or during the wait)."""
        return not self.stop.wait(self.delay())
