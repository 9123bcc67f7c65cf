"""Tests for logpipe.dispatch: the batch worker, its overflow policies and counters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from conftest import wait_until
from logpipe import record
from logpipe.dispatch import Dispatcher, DispatchStats
from logpipe.exceptions import ConfigError
from logpipe.exporters.base import Exporter, ExportResult, PartialFailure, Pending
from logpipe.testing import InMemoryExporter


def records(n: int) -> list[record.Record]:
    return [record.info(f"m{i}", "t.f", {"i": i}) for i in range(n)]


def balanced(s: DispatchStats) -> bool:
    """Every submitted record is accounted for exactly once."""
    return s.submitted == s.sent + s.spilled + s.failed + s.dropped + s.queued + s.in_flight


def blocked_dispatcher(
    policy: str, fallback: Exporter | None = None, size: int = 4
) -> tuple[Dispatcher, InMemoryExporter]:
    """A dispatcher whose exporter holds its first batch until the gate opens."""
    primary = InMemoryExporter()
    primary.gate.clear()
    d = Dispatcher(primary, fallback=fallback, queue_size=size, batch_size=1, batch_delay=0.01, overflow=policy)  # type: ignore[arg-type]
    d.submit(record.info("in flight", "t.f"))
    wait_until(lambda: d.stats().in_flight == 1, 5)
    return d, primary


class TestBatching:
    def test_everything_submitted_is_exported_in_order(self) -> None:
        """Records arrive at the exporter once each, in submission order."""
        mem = InMemoryExporter()
        d = Dispatcher(mem, batch_size=50, batch_delay=0.01)
        batch = records(1000)
        for r in batch:
            d.submit(r)
        assert d.force_flush(5.0)
        assert mem.ids() == [r.id for r in batch]
        assert max(mem.batches) <= 50
        s = d.stats()
        assert (s.submitted, s.sent, s.queued) == (1000, 1000, 0) and balanced(s)
        d.shutdown(5.0)

    def test_partial_batches_go_out_after_the_delay(self) -> None:
        """A lone record is exported after batch_delay without any flush."""
        mem = InMemoryExporter()
        d = Dispatcher(mem, batch_size=100, batch_delay=0.05)
        d.submit(record.info("alone", "t.f"))
        wait_until(lambda: mem.records, 5)
        d.shutdown(5.0)

    def test_shutdown_drains_the_queue(self) -> None:
        """Shutdown exports what is queued, then shuts the exporter down."""
        mem = InMemoryExporter()
        d = Dispatcher(mem, batch_size=10, batch_delay=60)
        for r in records(25):
            d.submit(r)
        d.shutdown(5.0)
        assert len(mem.records) == 25 and mem.shut_down
        assert not d.submit(record.info("late", "t.f"))
        assert d.stats().dropped == 1


class TestOverflow:
    def test_drop_newest(self) -> None:
        """A full queue refuses new records and counts them dropped."""
        d, primary = blocked_dispatcher("drop_newest")
        sent = records(10)
        accepted = [d.submit(r) for r in sent]
        assert accepted == [True] * 4 + [False] * 6
        primary.gate.set()
        assert d.force_flush(5.0)
        assert primary.ids()[1:] == [r.id for r in sent[:4]]
        s = d.stats()
        assert s.dropped == 6 and balanced(s)
        d.shutdown(5.0)

    def test_drop_oldest(self) -> None:
        """A full queue evicts its oldest records to keep the newest."""
        d, primary = blocked_dispatcher("drop_oldest")
        sent = records(10)
        assert all(d.submit(r) for r in sent)
        primary.gate.set()
        assert d.force_flush(5.0)
        assert primary.ids()[1:] == [r.id for r in sent[-4:]]
        s = d.stats()
        assert s.dropped == 6 and balanced(s)
        d.shutdown(5.0)

    def test_block_waits_then_drops(self) -> None:
        """The block policy waits block_timeout for room, then drops and counts."""
        d, primary = blocked_dispatcher("block")
        for r in records(4):
            assert d.submit(r)
        started = time.perf_counter()
        assert not d.submit(record.info("one too many", "t.f"))
        waited = time.perf_counter() - started
        assert 0.04 <= waited < 2.0
        assert d.stats().dropped == 1
        primary.gate.set()
        d.shutdown(5.0)

    def test_block_succeeds_when_room_appears(self) -> None:
        """A blocked log call proceeds as soon as the worker frees a slot."""
        primary = InMemoryExporter()
        primary.gate.clear()
        d = Dispatcher(primary, queue_size=2, batch_size=1, batch_delay=0.01, overflow="block", block_timeout=10.0)
        for r in records(3):
            d.submit(r)
        wait_until(lambda: d.stats().queued == 2 and d.stats().in_flight == 1, 5)
        import threading

        threading.Timer(0.05, primary.gate.set).start()
        assert d.submit(record.info("waits", "t.f"))
        assert d.force_flush(5.0)
        assert len(primary.records) == 4 and d.stats().dropped == 0
        d.shutdown(5.0)

    def test_spill_goes_to_the_fallback(self) -> None:
        """With spill, overflow is written to the fallback, never dropped."""
        backup = InMemoryExporter()
        d, primary = blocked_dispatcher("spill", fallback=backup)
        sent = records(10)
        for r in sent:
            d.submit(r)
        assert backup.ids() == [r.id for r in sent[4:]]
        primary.gate.set()
        assert d.force_flush(5.0)
        s = d.stats()
        assert (s.spilled, s.dropped, s.sent) == (6, 0, 5) and balanced(s)
        d.shutdown(5.0)

    def test_spill_without_fallback_is_a_config_error(self) -> None:
        """Asking to spill with nowhere to spill fails at configure time."""
        with pytest.raises(ConfigError, match="LOGPIPE_FALLBACK_EXPORTER"):
            Dispatcher(InMemoryExporter(), overflow="spill")


class FlakyExporter(InMemoryExporter):
    """Fails every record whose Msg contains 'bad'."""

    def export(self, batch):  # type: ignore[no-untyped-def]
        bad = [r for r in batch if b"bad" in r.payload]
        self.records.extend(r for r in batch if r not in bad)
        return PartialFailure(bad) if bad else ExportResult.SUCCESS


class RaisingExporter(InMemoryExporter):
    def export(self, batch):  # type: ignore[no-untyped-def]
        raise ConnectionError("broker gone")


class TestFailures:
    def test_failed_batch_goes_to_fallback(self) -> None:
        """A FAILURE result sends the whole batch to the fallback, counted spilled."""
        backup = InMemoryExporter()
        d = Dispatcher(InMemoryExporter(fail=True), fallback=backup, batch_delay=0.01)
        sent = records(20)
        for r in sent:
            d.submit(r)
        assert d.force_flush(5.0)
        assert backup.ids() == [r.id for r in sent]
        s = d.stats()
        assert (s.sent, s.spilled, s.failed) == (0, 20, 0) and balanced(s)
        d.shutdown(5.0)

    def test_partial_failure_spills_only_the_failed(self) -> None:
        """Only the records an exporter names as failed go to the fallback."""
        backup = InMemoryExporter()
        primary = FlakyExporter()
        d = Dispatcher(primary, fallback=backup, batch_size=10, batch_delay=0.01)
        for msg in ("ok1", "bad1", "ok2", "bad2"):
            d.submit(record.info(msg, "t.f"))
        assert d.force_flush(5.0)
        assert [x["Msg"] for x in backup.logs()] == ["bad1", "bad2"]
        assert [x["Msg"] for x in primary.logs()] == ["ok1", "ok2"]
        assert (d.stats().sent, d.stats().spilled) == (2, 2)
        d.shutdown(5.0)

    def test_exporter_exception_is_contained(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An exporter that raises neither kills the worker nor the app; it is counted."""
        d = Dispatcher(RaisingExporter(), batch_delay=0.01)
        for r in records(3):
            d.submit(r)
        assert d.force_flush(5.0)
        assert d.stats().failed == 3
        d.submit(record.info("after", "t.f"))
        assert d.force_flush(5.0)
        assert d.stats().failed == 4
        assert "broker gone" in capsys.readouterr().err
        d.shutdown(5.0)

    def test_failing_fallback_counts_failed(self) -> None:
        """When the fallback fails too, records are counted failed, not lost silently."""
        d = Dispatcher(InMemoryExporter(fail=True), fallback=InMemoryExporter(fail=True), batch_delay=0.01)
        for r in records(5):
            d.submit(r)
        assert d.force_flush(5.0)
        assert d.stats().failed == 5
        d.shutdown(5.0)


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def file_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["Id"] for line in path.read_bytes().splitlines()]


class PipelinedExporter(InMemoryExporter):
    """Begins batches at once and completes each only when the test releases it.

    Records what the dispatcher does: how many batches were begun and not yet
    waited for at most, and in which order outcomes were collected.
    """

    def __init__(self, window: int, fail_batches: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.max_in_flight = window
        self.fail_batches = fail_batches
        self.begun: list[list[record.Record]] = []
        self.waited: list[int] = []
        self.outstanding = 0
        self.most_outstanding = 0
        self.release = threading.Semaphore(0)

    def begin(self, batch: Sequence[record.Record]) -> Pending:
        number = len(self.begun)
        self.begun.append(list(batch))
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        return _Ticket(self, number, list(batch))


@dataclass
class _Ticket:
    exporter: PipelinedExporter
    number: int
    batch: list[record.Record]

    def wait(self) -> ExportResult | PartialFailure:
        assert self.exporter.release.acquire(timeout=10), "the test never released this batch"
        self.exporter.outstanding -= 1
        self.exporter.waited.append(self.number)
        if self.number in self.exporter.fail_batches:
            return ExportResult.FAILURE
        with self.exporter._lock:
            self.exporter.records.extend(self.batch)
        return ExportResult.SUCCESS


class _PollableTicket(_Ticket):
    """A ticket that can also be looked at with a timeout (a `logpipe.inflight.Pollable`), like the
    Kafka exporter's batches."""

    exporter: PollableExporter

    def ready(self, timeout: float) -> bool:
        self.exporter.looks += 1
        if self.number not in self.exporter.acquired and self.exporter.release.acquire(timeout=timeout):
            self.exporter.acquired.add(self.number)
        return self.number in self.exporter.acquired

    def wait(self) -> ExportResult | PartialFailure:
        assert self.ready(10), "the test never released this batch"
        self.exporter.release.release()  # what ready() took, for _Ticket.wait to take
        return super().wait()


class PollableExporter(PipelinedExporter):
    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.acquired: set[int] = set()
        #: Times the worker looked at a flight with `ready` (it does so while it waits for the outcome).
        self.looks = 0

    def begin(self, batch: Sequence[record.Record]) -> Pending:
        super().begin(batch)
        return _PollableTicket(self, len(self.begun) - 1, list(batch))


class TestPipelining:
    def test_a_full_batch_is_begun_while_the_oldest_is_still_out(self) -> None:
        """With a pollable exporter (Kafka's), the worker does not sit on the oldest batch's
        acknowledgements while a full batch waits in the queue: it begins it as soon as it is full."""
        exporter = PollableExporter(window=3)
        d = Dispatcher(exporter, batch_size=10, batch_delay=5.0, queue_size=1000)
        batch = records(30)
        for r in batch[:10]:
            d.submit(r)
        wait_until(lambda: len(exporter.begun) == 1 and exporter.looks > 0, 5)  # waiting for batch 0's outcome
        for r in batch[10:20]:
            d.submit(r)
        wait_until(lambda: len(exporter.begun) == 2, 5)  # batch 0 is never released before this
        assert exporter.waited == []
        exporter.release.release()  # batch 0 acknowledged: collected without a flush
        wait_until(lambda: d.stats().sent == 10, 5)
        for r in batch[20:]:
            d.submit(r)
        wait_until(lambda: len(exporter.begun) == 3, 5)
        for _ in range(2):
            exporter.release.release()
        assert d.force_flush(5.0)
        assert exporter.waited == [0, 1, 2]
        assert exporter.ids() == [r.id for r in batch]
        s = d.stats()
        assert (s.sent, s.in_flight, s.queued) == (30, 0, 0) and balanced(s)
        d.shutdown(5.0)

    def test_a_log_call_waits_for_the_worker_to_collect_outcomes_but_not_long(self) -> None:
        """While the worker looks at a pollable flight, submit waits for it, at most _SERVE_WAIT; a
        submit from inside the look (a client callback that logs) does not wait for itself."""
        from logpipe import dispatch

        exporter = PollableExporter(window=3)
        d = Dispatcher(exporter, batch_size=10, batch_delay=5.0, queue_size=1000)
        looking = threading.Event()
        inner: list[bool] = []
        ready = _PollableTicket.ready

        def slow_ready(ticket: _PollableTicket, timeout: float) -> bool:
            looking.set()
            if not inner:
                inner.append(d.submit(record.info("from a callback", "t.f")))  # the worker's own thread
            time.sleep(0.05)
            return ready(ticket, timeout)

        _PollableTicket.ready = slow_ready  # type: ignore[method-assign]
        try:
            for r in records(10):
                d.submit(r)
            assert looking.wait(5)
            started = time.perf_counter()
            d.submit(record.info("during the look", "t.f"))
            waited = time.perf_counter() - started
            assert waited < dispatch._SERVE_WAIT + 0.04, waited
            assert inner == [True]
        finally:
            _PollableTicket.ready = ready  # type: ignore[method-assign]
        exporter.release.release()
        exporter.release.release()
        assert d.force_flush(5.0)
        s = d.stats()
        assert (s.submitted, s.sent) == (12, 12) and balanced(s)
        d.shutdown(5.0)

    def test_a_flush_with_nothing_left_does_not_spin_the_worker(self) -> None:
        """While a flusher is about to notice it is done, the worker waits instead of looping."""
        d = Dispatcher(InMemoryExporter(), batch_size=10, batch_delay=0.05)
        takes = []
        take = d._take
        d._take = lambda flights: takes.append(1) or take(flights)  # type: ignore[method-assign]
        with d._lock:
            d._flushing += 1  # a flush whose target is reached, its flusher not yet back
            d._wake.notify()
        time.sleep(0.3)
        with d._lock:
            d._flushing -= 1
        assert len(takes) < 20, f"{len(takes)} turns of the worker's loop in 0.3 s"
        d.shutdown(5.0)

    def test_full_batches_are_begun_up_to_the_window_before_the_oldest_is_waited_for(self) -> None:
        """With max_in_flight=3 three full batches go out while none is acknowledged, never a fourth."""
        exporter = PipelinedExporter(window=3)
        d = Dispatcher(exporter, batch_size=10, batch_delay=0.01, queue_size=1000)
        for r in records(100):
            d.submit(r)
        wait_until(lambda: len(exporter.begun) == 3, 5)
        s = d.stats()
        assert s.in_flight == 30 and s.queued == 70 and balanced(s)
        assert exporter.waited == []
        for _ in range(10):
            exporter.release.release()
        assert d.force_flush(5.0)
        assert exporter.most_outstanding == 3
        assert exporter.waited == list(range(10)), "outcomes are collected oldest first"
        assert exporter.ids() == [r.id for r in records_of(exporter.begun)]
        s = d.stats()
        assert (s.sent, s.in_flight, s.queued) == (100, 0, 0) and balanced(s)
        d.shutdown(5.0)

    def test_failed_batch_in_the_window_goes_to_the_fallback_alone(self) -> None:
        """The middle batch fails while its neighbours succeed: exactly its records are spilled."""
        exporter = PipelinedExporter(window=3, fail_batches=frozenset({1}))
        fallback = InMemoryExporter()
        d = Dispatcher(exporter, fallback=fallback, batch_size=10, batch_delay=0.01)
        batch = records(30)
        for r in batch:
            d.submit(r)
        wait_until(lambda: len(exporter.begun) == 3, 5)
        for _ in range(3):
            exporter.release.release()
        assert d.force_flush(5.0)
        assert fallback.ids() == [r.id for r in batch[10:20]]
        assert exporter.ids() == [r.id for r in batch[:10] + batch[20:]]
        s = d.stats()
        assert (s.sent, s.spilled) == (20, 10) and balanced(s)
        d.shutdown(5.0)

    def test_a_trickle_is_not_held_behind_the_window(self) -> None:
        """A partial batch is begun once nothing is in flight, without a flush."""
        exporter = PipelinedExporter(window=3)
        d = Dispatcher(exporter, batch_size=100, batch_delay=0.01)
        d.submit(record.info("lonely", "t.f"))
        wait_until(lambda: len(exporter.begun) == 1, 5)
        exporter.release.release()
        wait_until(lambda: d.stats().sent == 1, 5)
        d.shutdown(5.0)

    def test_shutdown_waits_for_every_batch_in_flight(self) -> None:
        exporter = PipelinedExporter(window=2)
        d = Dispatcher(exporter, batch_size=5, batch_delay=0.01)
        for r in records(20):
            d.submit(r)
        wait_until(lambda: len(exporter.begun) == 2, 5)
        for _ in range(4):
            exporter.release.release()
        d.shutdown(5.0)
        s = d.stats()
        assert (s.sent, s.in_flight, s.queued) == (20, 0, 0) and balanced(s)

    def test_begin_raising_counts_as_a_failed_batch(self) -> None:
        class Broken(InMemoryExporter):
            max_in_flight = 2

            def begin(self, batch: Sequence[record.Record]) -> Pending:
                raise RuntimeError("client exploded")

        fallback = InMemoryExporter()
        d = Dispatcher(Broken(), fallback=fallback, batch_size=5, batch_delay=0.01)
        for r in records(12):
            d.submit(r)
        assert d.force_flush(5.0)
        s = d.stats()
        assert (s.sent, s.spilled) == (0, 12) and balanced(s)
        d.shutdown(5.0)


def records_of(batches: list[list[record.Record]]) -> list[record.Record]:
    return [r for b in batches for r in b]


class TestProcessLifecycle:
    def test_flush_at_interpreter_exit(self, tmp_path: Path) -> None:
        """Records still queued when the program ends are written by the atexit hook."""
        done = run_python(
            """
            import structlog, logpipe
            structlog.configure(processors=logpipe.processors(batch_delay=3600, batch_size=100000, local_render="none"))
            log = structlog.get_logger()
            for i in range(500):
                log.info("bye", i=i)
            """,
            tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert len(set(file_ids(tmp_path / "logs" / "logpipe.jsonl"))) == 500

    def test_flush_on_sigterm(self, tmp_path: Path) -> None:
        """SIGTERM flushes queued records and the process still dies of SIGTERM."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    """
                    import sys, time, structlog, logpipe
                    structlog.configure(
                        processors=logpipe.processors(batch_delay=3600, batch_size=100000, local_render="none")
                    )
                    log = structlog.get_logger()
                    for i in range(300):
                        log.info("term", i=i)
                    print("ready", flush=True)
                    time.sleep(60)
                    """
                ),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.terminate()
        assert proc.wait(30) == -15
        assert len(set(file_ids(tmp_path / "logs" / "logpipe.jsonl"))) == 300

    def test_fork_child_has_a_working_worker_and_nothing_is_lost(self, tmp_path: Path) -> None:
        """After fork the child ships its own records; the parent's queue is sent once, by the parent."""
        done = run_python(
            """
            import os, structlog, logpipe
            structlog.configure(processors=logpipe.processors(batch_delay=3600, batch_size=100000, local_render="none"))
            log = structlog.get_logger()
            for i in range(200):
                log.info("parent-before-fork", i=i)
            pid = os.fork()
            if pid == 0:
                for i in range(100):
                    log.info("child", i=i)
                ok = logpipe.flush(10)
                os._exit(0 if ok and logpipe.stats()["file"].sent == 100 else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
            for i in range(50):
                log.info("parent-after-fork", i=i)
            """,
            tmp_path,
        )
        assert done.returncode == 0, done.stderr
        docs = [orjson.loads(line) for line in (tmp_path / "logs" / "logpipe.jsonl").read_bytes().splitlines()]
        ids = [d["Id"] for d in docs]
        assert len(ids) == len(set(ids)) == 350
        counts = {m: sum(d["Msg"] == m for d in docs) for m in ("parent-before-fork", "child", "parent-after-fork")}
        assert counts == {"parent-before-fork": 200, "child": 100, "parent-after-fork": 50}
