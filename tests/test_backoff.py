"""Tests for logpipe.backoff: the one retry delay."""

from __future__ import annotations

import random
import threading
import time

import pytest

from logpipe.backoff import Backoff


class TestDelays:
    def test_doubles_up_to_the_maximum_without_jitter(self) -> None:
        """1, 2, 4, 8, 8: exponential, capped."""
        b = Backoff(1.0, 8.0, jitter=0)
        assert [b.delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
        assert b.failures == 5

    def test_reset_starts_over(self) -> None:
        """After a success the next failure waits the initial delay again."""
        b = Backoff(0.5, 10.0, jitter=0)
        b.delay(), b.delay()
        b.reset()
        assert (b.delay(), b.failures) == (0.5, 1)

    def test_jitter_shortens_each_delay_within_its_bound(self) -> None:
        """Every delay lies in [(1 - jitter) * d, d], and they are not all equal."""
        delays = []
        for seed in range(50):
            b = Backoff(2.0, 2.0, jitter=0.5, rng=random.Random(seed))
            delays.append(b.delay())
        assert all(1.0 <= d <= 2.0 for d in delays)
        assert len(set(delays)) > 10

    @pytest.mark.parametrize(("initial", "maximum", "jitter"), [(-1, 1, 0.1), (2, 1, 0.1), (1, 2, 1.0)])
    def test_nonsense_is_refused(self, initial: float, maximum: float, jitter: float) -> None:
        with pytest.raises(ValueError):
            Backoff(initial, maximum, jitter=jitter)


class TestWait:
    def test_a_stop_ends_the_wait_at_once(self) -> None:
        """wait() returns False as soon as the stop event is set, not after the delay."""
        stop = threading.Event()
        b = Backoff(60.0, 60.0, stop=stop)
        threading.Timer(0.05, stop.set).start()
        started = time.monotonic()
        assert b.wait() is False
        assert time.monotonic() - started < 30

    def test_a_full_wait_returns_true(self) -> None:
        assert Backoff(0.001, 0.001).wait() is True
