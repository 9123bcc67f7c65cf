"""Tests for logpipe.inflight: begin up to N, settle oldest first, commit the acknowledged front."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logpipe.inflight import Deferred, Done, InFlight


class Gate:
    """A Pending that answers once opened (a delivery still on the wire)."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.opened = threading.Event()

    def wait(self) -> str:
        assert self.opened.wait(10)
        return self.outcome


class TestWindow:
    def test_full_at_the_limit(self) -> None:
        w: InFlight[str, str] = InFlight(2, failed="failed")
        w.begin("a", lambda: Done("ok"))
        assert not w.full
        w.begin("b", lambda: Done("ok"))
        assert w.full and len(w) == 2

    def test_settles_oldest_first(self) -> None:
        """Outcomes come back in the order begun, whatever order they finish in."""
        w: InFlight[str, str] = InFlight(3, failed="failed")
        gates = {name: Gate(f"{name}-ok") for name in "abc"}
        for name, gate in gates.items():
            w.begin(name, lambda gate=gate: gate)
        for gate in reversed(gates.values()):
            gate.opened.set()
        assert [w.settle() for _ in range(3)] == [("a", "a-ok"), ("b", "b-ok"), ("c", "c-ok")]
        assert w.settle() is None

    def test_a_raising_start_or_wait_is_the_failed_outcome(self) -> None:
        """An exporter bug is a failure of that batch, reported, not an exception out of the loop."""
        heard: list[str] = []
        w: InFlight[str, str] = InFlight(2, failed="failed", report=heard.append)

        class Broken:
            def wait(self) -> str:
                raise RuntimeError("lost")

        def boom() -> Done[str]:
            raise OSError("no route")

        w.begin("a", boom)
        w.begin("b", Broken)
        assert [w.settle(), w.settle()] == [("a", "failed"), ("b", "failed")]
        assert len(heard) == 2 and "OSError" in heard[0] and "RuntimeError" in heard[1]

    def test_settle_with_a_timeout_leaves_an_unfinished_deferred(self) -> None:
        w: InFlight[str, int] = InFlight(1, failed=-1)
        future: Future[int] = Future()
        w.begin("a", lambda: Deferred(future))
        assert w.settle(timeout=0.01) is None and len(w) == 1
        future.set_result(7)
        assert w.settle(timeout=0.01) == ("a", 7)


class TestCommitOrder:
    def test_only_the_acknowledged_front_is_committed(self) -> None:
        """A later batch acknowledged first waits for the earlier ones."""
        committed: list[list[str]] = []
        w: InFlight[str, str] = InFlight(3, failed="failed", commit=committed.append)
        a, b, c = "batch a", "batch b", "batch c"
        for batch in (a, b, c):
            w.begin(batch, lambda: Done("ok"))
        for _ in range(3):
            w.settle()
        assert w.acknowledge(c) == [] and committed == []
        assert w.acknowledge(a) == [a]
        assert w.acknowledge(b) == [b, c]
        assert committed == [[a], [b, c]] and w.open == 0

    def test_a_batch_still_flying_is_not_committed(self) -> None:
        """Acknowledged while a flight of it is out (a retry): committed only once that flight settles."""
        w: InFlight[str, str] = InFlight(2, failed="failed")
        a = "batch a"
        w.begin(a, lambda: Done("ok"))
        assert w.acknowledge(a) == []
        w.settle()
        assert w.acknowledge(a) == [a]

    def test_a_retried_batch_keeps_its_place(self) -> None:
        """A batch that flies again is still committed before batches begun after it."""
        w: InFlight[str, str] = InFlight(2, failed="failed")
        a, b = "batch a", "batch b"
        w.begin(a, lambda: Done("partial"))
        w.begin(b, lambda: Done("ok"))
        assert w.settle() == (a, "partial")
        w.begin(a, lambda: Done("ok"))  # the retry
        assert w.settle() == (b, "ok")
        assert w.acknowledge(b) == []
        assert w.flying(a)
        assert w.settle() == (a, "ok")
        assert w.acknowledge(a) == [a, b]

    def test_acknowledging_an_unknown_batch_is_an_error(self) -> None:
        w: InFlight[str, str] = InFlight(1, failed="failed")
        with pytest.raises(KeyError):
            w.acknowledge("x")

    @given(st.permutations(list(range(8))))
    def test_commits_are_always_a_prefix_in_begin_order(self, order: list[int]) -> None:
        """Whatever order batches are acknowledged in, the commits concatenate to the begin order."""
        batches = [f"b{i}" for i in range(8)]
        committed: list[str] = []
        w: InFlight[str, str] = InFlight(8, failed="failed", commit=committed.extend)
        for b in batches:
            w.begin(b, lambda: Done("ok"))
        for _ in batches:
            w.settle()
        for i in order:
            w.acknowledge(batches[i])
            assert committed == batches[: len(committed)]
        assert committed == batches
