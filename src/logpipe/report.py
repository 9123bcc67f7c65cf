"""Telling a human about a problem: one line on stderr, rate-limited, never through logging.

Why not `logging`: logpipe may be what `logging` feeds (stdlib -> structlog
-> logpipe), so a problem reported through it could loop back into the very
exporter that has the problem. Why rate-limited: a flapping broker or a queue
that stays full must not flood stderr; `logpipe.stats()` keeps the full count.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Reporter"]


class Reporter:
    """Prints ``logpipe: <prefix><message>`` at most once every *every* seconds (unless forced); never raises."""

    def __init__(self, prefix: str = "", *, every: float = 10.0) -> None:
        self.prefix = prefix
        self.every = every
        #: When the last line was printed; None before the first (not 0.0: the monotonic
        #: clock counts from boot, so on a machine up for less than *every* seconds a
        #: first report compared with 0.0 would be swallowed).
        self._last: float | None = None

    def __call__(self, message: str, *, force: bool = False) -> bool:
        """Print *message* unless one was printed less than ``every`` seconds ago; True when printed."""
        now = time.monotonic()
        if not force and self._last is not None and now - self._last < self.every:
            return False
        self._last = now
        try:
            print(f"logpipe: {self.prefix}{message}", file=sys.stderr, flush=True)
        except Exception:  # stderr may be closed at exit
            return False
        return True
