"""logpipe.spool replay: committed progress through crashes, partial failures, poison records; ``logpipe replay``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from spool_helpers import FailAfter, drain, records, spooled

from conftest import wait_until
from logpipe import deadletter
from logpipe.cli import main
from logpipe.exporters.base import ExportResult, PartialFailure
from logpipe.record import Record
from logpipe.spool import REJECTED_FILE, DirectoryLock, Replayer, Spool, Step
from logpipe.testing import InMemoryExporter


class TestCrashSafety:
    def test_progress_survives_a_failing_primary_and_a_restart(self, tmp_path: Path) -> None:
        """A primary failing mid-batch commits exactly what it took; a new process resumes there."""
        sent, spool = spooled(tmp_path, 50, segment_bytes=3_000)
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
        sent, spool = spooled(tmp_path / "s", 400, segment_bytes=20_000)
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


class TestPoisonRecords:
    def test_partial_failure_keeps_order_and_rejects_poison(self, tmp_path: Path) -> None:
        """A record refused again and again (others accepted) becomes a dead letter; order is kept."""
        sent = records(6)
        poison = sent[2].id

        class Picky(InMemoryExporter):
            def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:  # type: ignore[override]
                bad = [r for r in batch if r.id == poison]
                super().export([r for r in batch if r.id != poison])
                return PartialFailure(bad) if bad else ExportResult.SUCCESS

        spool = Spool(tmp_path)
        spool.append([r.payload for r in sent])
        (segment,) = spool.segments()
        spool_segment = segment.name
        primary = Picky()
        replayer = Replayer(spool, primary, batch=10, max_attempts=3)
        steps = [replayer.step() for _ in range(5)]
        assert steps[-1] is Step.IDLE
        delivered = primary.ids()
        assert delivered[:2] == [r.id for r in sent[:2]]
        assert set(delivered) == {r.id for r in sent} - {poison}
        assert spool.stats().rejected == 1
        (letter,) = deadletter.read(tmp_path / REJECTED_FILE)
        assert deadletter.original(letter) == sent[2].payload
        assert letter["source"]["spool"] == str(tmp_path)
        assert letter["source"]["segment"] == spool_segment
        assert letter["source"]["offset"] == len(sent[0].payload) + len(sent[1].payload) + 2
        assert "refused 3 times" in letter["reason"]


class TestReplayCommand:
    def test_replays_a_directory_into_the_named_exporter(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`logpipe replay DIR -e file` delivers every record, prints the count, exits 0."""
        sent, spool = spooled(tmp_path / "spool" / "kafka", 40, segment_bytes=3_000)
        monkeypatch.setenv("LOGPIPE_FILE_PATH", str(tmp_path / "out.jsonl"))
        result = CliRunner().invoke(main, ["replay", str(tmp_path / "spool" / "kafka"), "-e", "file"])
        assert result.exit_code == 0, result.output
        assert "40 record(s) replayed" in result.output
        lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
        assert [Record.from_json(x).id for x in lines] == [r.id for r in sent]
        assert Spool(tmp_path / "spool" / "kafka").stats().segments == 0

    def test_exits_non_zero_when_records_cannot_be_sent(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An exporter that keeps failing (a broker nobody runs): the command gives up after --timeout, exits 1."""
        Spool(tmp_path).append([r.payload for r in records(5)])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        monkeypatch.setenv("LOGPIPE_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed}")
        monkeypatch.setenv("LOGPIPE_KAFKA_CONNECT_TIMEOUT", "0.2")
        result = CliRunner().invoke(
            main, ["replay", str(tmp_path), "-e", "kafka", "--timeout", "0.5", "--interval", "0.05"]
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
            result = CliRunner().invoke(main, ["replay", str(tmp_path), "-e", "file"])
        finally:
            lock.release()
        assert result.exit_code != 0
        assert "being replayed by process" in result.output
        assert other.acquire()
        other.release()

    def test_replays_a_dead_letter_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`logpipe replay rejected.ndjson` sends the letters' original records, then renames the file."""
        sent = records(3)
        letters = tmp_path / REJECTED_FILE
        deadletter.FileDeadLetters(letters).write(
            [deadletter.DeadLetter(r.payload, "refused", {"spool": "x", "segment": "s", "offset": 0}) for r in sent]
        )
        monkeypatch.setenv("LOGPIPE_FILE_PATH", str(tmp_path / "out.jsonl"))
        result = CliRunner().invoke(main, ["replay", str(letters), "-e", "file"])
        assert result.exit_code == 0, result.output
        lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
        assert [Record.from_json(x).id for x in lines] == [r.id for r in sent]
        assert not letters.exists() and (tmp_path / f"{REJECTED_FILE}.replayed").exists()
        assert not (tmp_path / f"{REJECTED_FILE}.replay").exists()


class TestWindow:
    def test_pipelined_primary_gets_several_chunks_in_flight(self, tmp_path: Path) -> None:
        """With max_in_flight 3, three chunks are begun before the oldest is awaited; all arrive in order."""
        from logpipe.inflight import Pending

        sent, spool = spooled(tmp_path, 30)

        class Pipelined(InMemoryExporter):
            max_in_flight = 3

            def __init__(self) -> None:
                super().__init__()
                self.open: list[int] = []
                self.most = 0

            def begin(self, batch: Sequence[Record]) -> Pending[ExportResult | PartialFailure]:
                self.open.append(1)
                self.most = max(self.most, len(self.open))
                exporter = self

                class Later:
                    def wait(self) -> ExportResult | PartialFailure:
                        exporter.open.pop()
                        return exporter.export(batch)

                return Later()

        primary = Pipelined()
        drain(spool, primary, batch=4)
        assert primary.ids() == [r.id for r in sent]
        assert primary.most == 3
        assert spool.stats().segments == 0

    def test_flights_begun_while_the_primary_failed_cost_one_backoff(self, tmp_path: Path) -> None:
        """The step that sees a failure settles the whole window, so the first step after recovery delivers.

        Each BLOCKED step makes the caller back off (up to 10 s in the spool
        exporter); stale failures settled one per step delayed replay by one
        backoff each after the broker was back (found by bench memory_outage).
        """
        sent, spool = spooled(tmp_path, 30)

        class Windowed(InMemoryExporter):
            max_in_flight = 3

        primary = Windowed(fail=True)
        replayer = Replayer(spool, primary, batch=4)
        assert replayer.step() is Step.BLOCKED
        primary.fail = False  # the destination is back
        assert replayer.step() is Step.PROGRESS
        while (step := replayer.step()) is Step.PROGRESS:
            pass
        assert step is Step.IDLE
        assert primary.ids() == [r.id for r in sent]
        assert spool.stats().replayed == 30
