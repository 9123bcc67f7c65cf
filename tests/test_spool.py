"""The spool: durable on-disk queue, replay with committed progress, size cap, fork safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

import logpipe
from conftest import wait_until
from logpipe.cli import main
from logpipe.exporters.base import Exporter, ExportResult, PartialFailure
from logpipe.exporters.spool import SpoolExporter, SpoolOptions
from logpipe.record import Record, info
from logpipe.spool import REJECTED_DIR, DirectoryLock, Replayer, Spool, Step
from logpipe.testing import InMemoryExporter


def records(n: int, prefix: str = "r") -> list[Record]:
    """*n* records whose payloads all have the same length (size arithmetic in the cap tests)."""
    return [info(f"{prefix}{i:05d}", "tests.test_spool", {"n": f"{i:05d}"}) for i in range(n)]


def drain(spool: Spool, primary: Exporter, batch: int = 7) -> None:
    """Replay until the spool is empty; fails the test if the primary blocks."""
    replayer = Replayer(spool, primary, batch=batch)
    while (step := replayer.step()) is Step.PROGRESS:
        pass
    assert step is Step.IDLE


class FailAfter(Exporter):
    """Accepts *limit* records in total, then fails the rest of that batch and everything after."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.records: list[Record] = []

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        room = max(0, self.limit - len(self.records))
        self.records.extend(batch[:room])
        if room >= len(batch):
            return ExportResult.SUCCESS
        return PartialFailure(batch[room:]) if room else ExportResult.FAILURE


class TestAppendAndReplay:
    def test_replay_keeps_order_across_segments(self, tmp_path: Path) -> None:
        """Records come back in append order even when they span many segments."""
        spool = Spool(tmp_path / "s", segment_bytes=2_000)
        sent = records(100)
        for i in range(0, 100, 9):
            assert spool.append([r.payload for r in sent[i : i + 9]]) == len(sent[i : i + 9])
        spool.close()
        assert spool.stats().segments > 3
        memory = InMemoryExporter()
        drain(spool, memory)
        assert memory.ids() == [r.id for r in sent]
        stats = spool.stats()
        assert (stats.written, stats.replayed, stats.pending_bytes, stats.segments) == (100, 100, 0, 0)

    def test_payload_is_replayed_byte_for_byte(self, tmp_path: Path) -> None:
        """What the primary gets is the original record, payload unchanged."""
        spool = Spool(tmp_path)
        record = info("ünïcode ✓", "f", {"nested": {"a": [1, 2]}}, trace_id="ab" * 16)
        spool.append([record.payload])
        memory = InMemoryExporter()
        drain(spool, memory)
        assert memory.records[0].payload == record.payload
        assert memory.records[0].id == record.id
        assert memory.records[0].trace_id == "ab" * 16

    def test_open_segment_is_replayed_but_kept(self, tmp_path: Path) -> None:
        """The segment still being written is read up to its end and not deleted."""
        spool = Spool(tmp_path)
        spool.append([r.payload for r in records(3)])
        memory = InMemoryExporter()
        drain(spool, memory)
        assert len(memory.records) == 3
        assert spool.stats().segments == 1
        late = records(2, "late")
        spool.append([r.payload for r in late])
        drain(spool, memory)
        assert memory.ids()[3:] == [r.id for r in late]

    def test_incomplete_line_of_open_segment_is_not_torn(self, tmp_path: Path) -> None:
        """A half-written line in a segment that is still open is left for later, not skipped."""
        spool = Spool(tmp_path)
        first, second = records(2)
        spool.append([first.payload])
        assert spool._fd is not None
        os.write(spool._fd, second.payload[:10])  # an append caught half-way
        memory = InMemoryExporter()
        drain(spool, memory)
        assert memory.ids() == [first.id]
        os.write(spool._fd, second.payload[10:] + b"\n")
        drain(spool, memory)
        assert memory.ids() == [first.id, second.id]
        assert spool.stats().torn == 0


class TestCrashSafety:
    def test_progress_survives_a_failing_primary_and_a_restart(self, tmp_path: Path) -> None:
        """A primary failing mid-batch commits exactly what it took; a new process resumes there."""
        sent = records(50)
        spool = Spool(tmp_path, segment_bytes=3_000)
        spool.append([r.payload for r in sent])
        spool.close()
        flaky = FailAfter(23)
        replayer = Replayer(spool, flaky, batch=10)
        steps = [replayer.step() for _ in range(4)]
        assert steps == [Step.PROGRESS, Step.PROGRESS, Step.PROGRESS, Step.BLOCKED]
        assert spool.stats().replayed == 23

        reopened = Spool(tmp_path)  # what the next process sees
        memory = InMemoryExporter()
        drain(reopened, memory)
        assert [r.id for r in flaky.records] + memory.ids() == [r.id for r in sent]

    def test_killed_replayer_loses_nothing(self, tmp_path: Path) -> None:
        """SIGKILL in the middle of a replay: the next replay delivers every record, few twice."""
        sent = records(400)
        spool = Spool(tmp_path / "s", segment_bytes=20_000)
        spool.append([r.payload for r in sent])
        spool.close()
        out = tmp_path / "delivered.txt"
        script = textwrap.dedent(
            f"""
            import os, sys, time
            from logpipe.exporters.base import Exporter, ExportResult
            from logpipe.spool import Replayer, Spool

            class Slow(Exporter):
                def export(self, batch):
                    with open({str(out)!r}, "a") as f:
                        f.writelines(r.id + "\\n" for r in batch)
                        f.flush()
                        os.fsync(f.fileno())
                    time.sleep(0.02)
                    return ExportResult.SUCCESS

            replayer = Replayer(Spool({str(tmp_path / "s")!r}), Slow(), batch=10)
            print("ready", flush=True)
            while True:
                replayer.step()
            """
        )
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            wait_until(lambda: out.exists() and len(out.read_text().split()) >= 150, timeout=30)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        first_pass = out.read_text().split()
        assert 150 <= len(first_pass) < 400

        memory = InMemoryExporter()
        drain(Spool(tmp_path / "s"), memory)
        delivered = first_pass + memory.ids()
        assert set(delivered) == {r.id for r in sent}  # none lost
        duplicates = len(delivered) - len(sent)
        assert 0 <= duplicates <= 10  # at most the batch in flight when it died
        assert memory.ids() == [r.id for r in sent][len(sent) - len(memory.ids()) :]  # resumed in order

    def test_torn_last_line_is_skipped_and_counted(self, tmp_path: Path) -> None:
        """A crash mid-write leaves half a line at the end of a segment: skip it, count it, go on."""
        sent = records(5)
        segment = tmp_path / "00000000000000000001-1-000000.jsonl"
        segment.write_bytes(b"".join(r.payload + b"\n" for r in sent[:4]) + sent[4].payload[:25])
        after = records(2, "after")
        later = Spool(tmp_path)
        later.append([r.payload for r in after])
        later.close()
        memory = InMemoryExporter()
        drain(later, memory)
        assert memory.ids() == [r.id for r in sent[:4] + after]
        stats = later.stats()
        assert (stats.torn, stats.segments, stats.pending_bytes) == (1, 0, 0)

    def test_garbage_line_in_the_middle_is_skipped_once(self, tmp_path: Path) -> None:
        """A line that is not a KafkaLog record is stepped over and counted once, even across retries."""
        a, b = records(2)
        (tmp_path / "00000000000000000001-1-000000.jsonl").write_bytes(
            a.payload + b"\n" + b"{not json\n" + b"\n" + b.payload + b"\n"
        )
        spool = Spool(tmp_path)
        flaky = FailAfter(1)
        replayer = Replayer(spool, flaky, batch=10)
        assert replayer.step() is Step.PROGRESS  # a delivered, b refused
        assert replayer.step() is Step.BLOCKED
        memory = InMemoryExporter()
        drain(spool, memory)
        assert [r.id for r in flaky.records] + memory.ids() == [a.id, b.id]
        assert spool.stats().torn == 2

    def test_offset_file_is_replaced_atomically(self, tmp_path: Path) -> None:
        """Progress is a whole number in <segment>.offset, with no temporary file left behind."""
        sent = records(4)
        spool = Spool(tmp_path)
        spool.append([r.payload for r in sent])
        replayer = Replayer(spool, FailAfter(2), batch=10)
        replayer.step()
        (segment,) = spool.segments()
        offset = int(Path(f"{segment}.offset").read_text())
        assert offset == len(sent[0].payload) + len(sent[1].payload) + 2
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


class TestSizeCap:
    def test_drop_oldest_deletes_whole_segments_and_counts_them(self, tmp_path: Path) -> None:
        """Past max_bytes the oldest segment goes; its records are counted dropped; the newest stay."""
        sent = records(200)
        size = len(sent[0].payload) + 1
        spool = Spool(tmp_path, max_bytes=size * 50, segment_bytes=size * 10, full="drop_oldest")
        for r in sent:
            assert spool.append([r.payload]) == 1
        stats = spool.stats()
        assert stats.written == 200
        assert sum(p.stat().st_size for p in spool.segments()) <= size * 50
        memory = InMemoryExporter()
        drain(spool, memory)
        kept = memory.ids()
        assert stats.dropped + len(kept) == 200
        assert stats.dropped >= 150
        assert kept == [r.id for r in sent[-len(kept) :]]  # the newest survive, in order

    def test_drop_newest_refuses_and_counts(self, tmp_path: Path) -> None:
        """With drop_newest a full spool refuses the batch (append returns 0) and keeps the oldest."""
        sent = records(100)
        size = len(sent[0].payload) + 1
        spool = Spool(tmp_path, max_bytes=size * 30, segment_bytes=size * 10, full="drop_newest")
        accepted = [spool.append([r.payload]) for r in sent]
        assert sum(accepted) == 30 and accepted[:30] == [1] * 30
        stats = spool.stats()
        assert (stats.written, stats.dropped) == (30, 70)
        memory = InMemoryExporter()
        drain(spool, memory)
        assert memory.ids() == [r.id for r in sent[:30]]
        assert spool.append([sent[0].payload]) == 1  # room again once replayed

    def test_dropped_segment_counts_only_undelivered_records(self, tmp_path: Path) -> None:
        """Dropping a half-replayed segment counts the records after its committed offset."""
        sent = records(20)
        size = len(sent[0].payload) + 1
        spool = Spool(tmp_path, max_bytes=size * 10, segment_bytes=size * 10)
        spool.append([r.payload for r in sent[:10]])
        Replayer(spool, FailAfter(4), batch=20).step()
        spool.append([sent[10].payload])
        assert spool.stats().dropped == 6

    def test_spool_exporter_reports_failure_when_refused(self, tmp_path: Path) -> None:
        """The exporter answers FAILURE for a refused batch, so the dispatcher counts it failed."""
        exporter = SpoolExporter(SpoolOptions(dir=tmp_path, max_bytes=300, full="drop_newest", replay=False))
        assert exporter.export(records(1)) is ExportResult.SUCCESS
        assert exporter.export(records(5)) is ExportResult.FAILURE
        assert exporter.stats().dropped == 5
        exporter.shutdown()


class TestSpoolExporter:
    def test_replays_what_a_previous_process_left(self, tmp_path: Path) -> None:
        """Segments found at start-up are replayed into the primary by the background thread."""
        sent = records(30)
        old = Spool(tmp_path / "spool" / "memory")
        old.append([r.payload for r in sent])
        old.close()
        memory = InMemoryExporter()
        exporter = SpoolExporter(SpoolOptions(dir=tmp_path / "spool", replay_interval=0.05))
        exporter.bind_primary("memory", memory)
        try:
            wait_until(lambda: len(memory.records) == 30, timeout=10)
            assert memory.ids() == [r.id for r in sent]
            wait_until(lambda: exporter.stats().segments == 0, timeout=10)
        finally:
            exporter.shutdown()

    def test_pipeline_spools_while_primary_fails_then_replays(self) -> None:
        """Through the real pipeline: a failing primary's records land in the spool, then arrive."""
        primary = InMemoryExporter(fail=True)
        pipeline = logpipe.configure(
            exporter=primary,
            fallback_exporter="spool",
            exporter_options={"spool": {"replay_interval": 0.05}},
            local_render="none",
            batch_delay=0.01,
        )
        structlog.configure(processors=pipeline.processors())
        log = structlog.get_logger()
        for i in range(300):
            log.info("event", i=i)
        assert logpipe.flush(10)
        stats = pipeline.stats()["InMemoryExporter"]
        assert (stats.spilled, stats.failed, stats.dropped) == (300, 0, 0)
        spool = pipeline.dispatchers[0].fallback
        assert spool is not None and "spool" in spool.describe()
        assert Path("logs/spool/InMemoryExporter").is_dir()
        primary.fail = False
        wait_until(lambda: len(primary.records) == 300, timeout=10)
        assert [r.decoded()["Field"]["i"] for r in primary.records] == list(range(300))

    def test_partial_failure_keeps_order_and_rejects_poison(self, tmp_path: Path) -> None:
        """A record refused again and again (others accepted) moves to rejected/; order is kept."""
        sent = records(6)
        poison = sent[2].id

        class Picky(InMemoryExporter):
            def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:  # type: ignore[override]
                bad = [r for r in batch if r.id == poison]
                super().export([r for r in batch if r.id != poison])
                return PartialFailure(bad) if bad else ExportResult.SUCCESS

        spool = Spool(tmp_path)
        spool.append([r.payload for r in sent])
        primary = Picky()
        replayer = Replayer(spool, primary, batch=10, max_attempts=3)
        steps = [replayer.step() for _ in range(5)]
        assert steps[-1] is Step.IDLE
        delivered = primary.ids()
        assert delivered[:2] == [r.id for r in sent[:2]]
        assert set(delivered) == {r.id for r in sent} - {poison}
        assert spool.stats().rejected == 1
        rejected = Spool(tmp_path / REJECTED_DIR)
        memory = InMemoryExporter()
        drain(rejected, memory)
        assert memory.ids() == [poison]


class TestProcesses:
    def test_only_one_process_holds_the_replay_lock(self, tmp_path: Path) -> None:
        """A second process cannot take replay.lock while the first holds it; it can once released."""
        lock = DirectoryLock(tmp_path)
        assert lock.acquire()
        probe = (
            "import sys; from logpipe.spool import DirectoryLock; "
            "sys.exit(0 if DirectoryLock(sys.argv[1]).acquire() else 3)"
        )
        assert subprocess.run([sys.executable, "-c", probe, str(tmp_path)]).returncode == 3
        lock.release()
        assert subprocess.run([sys.executable, "-c", probe, str(tmp_path)]).returncode == 0

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_forked_child_writes_its_own_segment_and_parent_replays_it(self, tmp_path: Path) -> None:
        """After fork the child appends to a segment named with its pid; the lock holder replays it."""
        memory = InMemoryExporter()
        exporter = SpoolExporter(SpoolOptions(dir=tmp_path, replay_interval=0.05))
        exporter.bind_primary("p", memory)
        parent_records = records(3, "parent")
        exporter.export(parent_records)
        wait_until(lambda: len(memory.records) == 3, timeout=10)
        child_records = records(4, "child")
        pid = os.fork()
        if pid == 0:  # the child: new segment, no concurrent replay of the parent's files
            code = 1
            try:
                exporter.after_fork()
                took_lock = DirectoryLock(tmp_path / "p").acquire()
                exporter.export(child_records)
                names = [p.name for p in exporter.spool.segments()]
                code = 0 if (not took_lock and any(f"-{os.getpid()}-" in n for n in names)) else 2
                exporter.shutdown(1.0)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        try:
            wait_until(lambda: len(memory.records) == 7, timeout=10)
            assert memory.ids()[3:] == [r.id for r in child_records]
        finally:
            exporter.shutdown()


class TestReplayCommand:
    def test_replays_a_directory_into_the_named_exporter(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`logpipe replay DIR -e file` delivers every record, prints the count, exits 0."""
        sent = records(40)
        spool = Spool(tmp_path / "spool" / "kafka", segment_bytes=3_000)
        spool.append([r.payload for r in sent])
        spool.close()
        monkeypatch.setenv("LOGPIPE_FILE_PATH", str(tmp_path / "out.jsonl"))
        result = CliRunner().invoke(main, ["replay", str(tmp_path / "spool" / "kafka"), "-e", "file"])
        assert result.exit_code == 0, result.output
        assert "40 record(s) replayed" in result.output
        lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
        assert [Record.from_json(x).id for x in lines] == [r.id for r in sent]
        assert Spool(tmp_path / "spool" / "kafka").stats().segments == 0

    def test_exits_non_zero_when_records_cannot_be_sent(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An exporter that keeps failing: the command gives up after --timeout, reports, exits 1."""
        Spool(tmp_path).append([r.payload for r in records(5)])
        monkeypatch.setenv("LOGPIPE_MEMORY_FAIL", "true")
        result = CliRunner().invoke(
            main, ["replay", str(tmp_path), "-e", "memory", "--timeout", "0.2", "--interval", "0.05"]
        )
        assert result.exit_code == 1, result.output
        assert "still pending" in result.output
        assert Spool(tmp_path).stats().pending_bytes > 0

    def test_refuses_a_directory_another_process_replays(self, tmp_path: Path) -> None:
        """Only one replayer per directory: the command says who holds the lock."""
        Spool(tmp_path).append([r.payload for r in records(1)])
        lock = DirectoryLock(tmp_path)
        assert lock.acquire()
        other = DirectoryLock(tmp_path)
        try:
            result = CliRunner().invoke(main, ["replay", str(tmp_path), "-e", "memory"])
        finally:
            lock.release()
        assert result.exit_code != 0
        assert "being replayed by process" in result.output
        assert other.acquire()
        other.release()
