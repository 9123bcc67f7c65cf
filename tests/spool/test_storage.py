"""logpipe.spool storage: appends, segments, committed offsets, the size cap, the replay lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from spool_helpers import FailAfter, drain, records

from logpipe.record import info
from logpipe.spool import DirectoryLock, Replayer, Spool
from logpipe.testing import InMemoryExporter


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


class TestDiskErrors:
    def test_a_failed_write_names_the_segment_and_accepts_nothing(self, tmp_path: Path, monkeypatch) -> None:
        """ENOSPC on write carries no file name; the spool's error says which file, so an operator knows where."""
        import errno

        import pytest

        from logpipe import durable

        spool = Spool(tmp_path / "s")
        first, second, third = (info(f"record {i}", "f", {}) for i in range(3))
        assert spool.append([first.payload]) == 1

        def full(fd: int, data: bytes) -> None:
            os.write(fd, data[:3])  # a full disk takes part of the write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(durable, "write_all", full)
        with pytest.raises(OSError, match="No space left on device") as caught:
            spool.append([second.payload, third.payload])
        assert caught.value.errno == errno.ENOSPC
        assert caught.value.filename is not None and Path(caught.value.filename).parent == tmp_path / "s"
        assert str(tmp_path / "s") in str(caught.value)
        monkeypatch.undo()
        replayed = InMemoryExporter()
        drain(spool, replayed)
        assert [r.id for r in replayed.records] == [first.id]  # the torn part was cut off, nothing else replayed


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
