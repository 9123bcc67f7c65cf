"""Spool commit/replay as a state machine: appends, replay steps against a flaky primary, crashes, torn lines.

Whatever happens, every appended record is delivered at least once or
counted (dropped, rejected, torn); nothing is delivered that was not
appended; and records the primary never failed arrive in append order (a
failed record is retried, so it may arrive after records sent behind it).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from logpipe import deadletter
from logpipe.exporters.base import Exporter, ExportResult, PartialFailure
from logpipe.record import Record, info
from logpipe.spool import REJECTED_FILE, Replayer, Spool, Step


class FlakyPrimary(Exporter):
    """Does what the next scripted mode says: take all, fail all, or refuse chosen records."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.max_in_flight = window
        self.delivered: list[str] = []
        #: Records the primary failed at least once: they may arrive after records behind them.
        self.retried: set[str] = set()
        self.mode: tuple[str, frozenset[int]] = ("ok", frozenset())

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        kind, picks = self.mode
        if kind == "fail":
            self.retried.update(r.id for r in batch)
            return ExportResult.FAILURE
        if kind == "some":
            bad = [r for i, r in enumerate(batch) if i in picks]
            self.delivered += [r.id for r in batch if r not in bad]
            self.retried.update(r.id for r in bad)
            return PartialFailure(bad) if bad else ExportResult.SUCCESS
        self.delivered += [r.id for r in batch]
        return ExportResult.SUCCESS


@settings(max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
class SpoolReplayMachine(RuleBasedStateMachine):
    @initialize(window=st.integers(1, 3), batch=st.integers(1, 5))
    def open(self, window: int, batch: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="logpipe-spool-state-"))
        self.primary = FlakyPrimary(window)
        self.batch = batch
        self.appended: list[str] = []
        self.torn_written = 0
        self.counted = {"dropped": 0, "rejected": 0, "torn": 0}
        self._reopen()

    def _reopen(self) -> None:
        self.spool = Spool(self.root, segment_bytes=600)
        self.replayer = Replayer(self.spool, self.primary, batch=self.batch, max_attempts=2)

    def teardown(self) -> None:
        """Check the end state (see `check_end`), then remove the directory."""
        try:
            if hasattr(self, "spool"):
                self.check_end()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @rule(n=st.integers(1, 6))
    def append(self, n: int) -> None:
        new = [info(f"m{len(self.appended) + i}", "state") for i in range(n)]
        assert self.spool.append([r.payload for r in new]) == n
        self.appended += [r.id for r in new]

    @rule(kind=st.sampled_from(["ok", "ok", "fail", "some"]), picks=st.frozensets(st.integers(0, 4), max_size=2))
    def replay_step(self, kind: str, picks: frozenset[int]) -> None:
        self.primary.mode = (kind, picks)
        self.replayer.step()

    @rule()
    def crash(self) -> None:
        """The process dies: the Spool and Replayer objects are gone, the directory stays."""
        self._count(self.spool)
        self.spool.close()
        self._reopen()

    @precondition(lambda self: not self.torn_written)
    @rule()
    def torn_last_line(self) -> None:
        """A crash in the middle of an append: half a line at the end of the writer's segment."""
        self._count(self.spool)
        self.spool.close()
        segment = self.spool.segments()[-1] if self.spool.segments() else None
        if segment is None:
            return
        with open(segment, "ab") as handle:
            handle.write(b'{"Id": "half')
        self.torn_written += 1
        self._reopen()

    def _count(self, spool: Spool) -> None:
        stats = spool.stats()
        self.counted["dropped"] += stats.dropped
        self.counted["rejected"] += stats.rejected
        self.counted["torn"] += stats.torn

    @invariant()
    def nothing_invented(self) -> None:
        assert set(self.primary.delivered) <= set(self.appended)

    def _drain(self) -> None:
        self.primary.mode = ("ok", frozenset())
        for _ in range(10_000):
            if self.replayer.step() is Step.IDLE:
                return
        raise AssertionError("replay did not finish")

    @invariant()
    def in_order_unless_retried(self) -> None:
        position = {rid: i for i, rid in enumerate(self.appended)}
        firsts = list(dict.fromkeys(r for r in self.primary.delivered if r not in self.primary.retried))
        indices = [position[r] for r in firsts]
        assert indices == sorted(indices)

    def check_end(self) -> None:
        """After a final drain with a healthy primary: each record delivered, or rejected as a dead letter."""
        self._drain()
        self._count(self.spool)
        delivered = set(self.primary.delivered)
        rejected_file = self.root / REJECTED_FILE
        letters = list(deadletter.read(rejected_file)) if rejected_file.exists() else []
        rejected = {Record.from_json(deadletter.original(doc) or b"").id for doc in letters}
        assert len(letters) == self.counted["rejected"]
        missing = [r for r in self.appended if r not in delivered and r not in rejected]
        assert not missing, missing
        assert self.counted["dropped"] == 0  # the cap is never reached here: nothing may be dropped
        assert self.counted["torn"] == self.torn_written


TestSpoolReplayMachine = SpoolReplayMachine.TestCase
