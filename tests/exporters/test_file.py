"""Tests for the file exporter: JSON Lines, rotation, fsync policy."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from logpipe import record
from logpipe.exporters.base import ExportResult
from logpipe.exporters.file import FileExporter, FileOptions


def batch(n: int, size: int = 10) -> list[record.Record]:
    return [record.info("x" * size, "t.f", {"i": i}) for i in range(n)]


class TestFileExporter:
    def test_writes_one_json_object_per_line(self, tmp_path: Path) -> None:
        """Each record is one line holding exactly its payload."""
        path = tmp_path / "out" / "a.jsonl"
        exp = FileExporter(FileOptions(path=path))
        recs = batch(5)
        assert exp.export(recs) is ExportResult.SUCCESS
        exp.shutdown()
        lines = path.read_bytes().splitlines()
        assert lines == [r.payload for r in recs]
        assert [orjson.loads(x)["Id"] for x in lines] == [r.id for r in recs]

    def test_appends_across_instances(self, tmp_path: Path) -> None:
        """A restarted process appends; nothing already on disk is lost."""
        path = tmp_path / "a.jsonl"
        for _ in range(2):
            exp = FileExporter(FileOptions(path=path))
            exp.export(batch(3))
            exp.shutdown()
        assert len(path.read_bytes().splitlines()) == 6

    def test_rotates_by_size_and_keeps_backups(self, tmp_path: Path) -> None:
        """Past max_bytes the file is renamed with a timestamp; only `backups` are kept."""
        path = tmp_path / "a.jsonl"
        one = len(batch(1)[0].payload) + 1
        exp = FileExporter(FileOptions(path=path, max_bytes=one * 3, backups=2))
        written = []
        for _ in range(10):
            recs = batch(2)
            written += [r.id for r in recs]
            exp.export(recs)
        exp.shutdown()
        rotated = sorted(tmp_path.glob("a.jsonl.*"))
        assert len(rotated) == 2
        for f in [*rotated, path]:
            assert f.stat().st_size <= one * 3
        kept = [orjson.loads(x)["Id"] for f in [*rotated, path] for x in f.read_bytes().splitlines()]
        assert kept == written[-len(kept) :]

    def test_rotates_by_age(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file older than rotate_seconds is rotated before the next write."""
        import logpipe.exporters.file as mod

        clock = [1_000_000.0]
        monkeypatch.setattr(mod.time, "time", lambda: clock[0])
        path = tmp_path / "a.jsonl"
        exp = FileExporter(FileOptions(path=path, rotate_seconds=60, max_bytes=0))
        exp.export(batch(1))
        clock[0] += 30
        exp.export(batch(1))
        assert not list(tmp_path.glob("a.jsonl.*"))
        clock[0] += 31
        exp.export(batch(1))
        exp.shutdown()
        assert len(list(tmp_path.glob("a.jsonl.*"))) == 1
        assert len(path.read_bytes().splitlines()) == 1

    @pytest.mark.parametrize(("mode", "expected"), [("never", 0), ("batch", 3), ("interval", 1)])
    def test_fsync_policy(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, expected: int) -> None:
        """fsync=never never syncs, batch syncs each write, interval at most once per interval."""
        calls: list[int] = []
        monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
        exp = FileExporter(FileOptions(path=tmp_path / "a.jsonl", fsync=mode, fsync_interval=3600))  # type: ignore[arg-type]
        for _ in range(3):
            exp.export(batch(1))
        assert len(calls) == expected

    def test_unwritable_path_raises_for_the_dispatcher(self, tmp_path: Path) -> None:
        """I/O errors surface as exceptions, which the dispatcher counts as failures."""
        blocker = tmp_path / "file"
        blocker.write_text("")
        exp = FileExporter(FileOptions(path=blocker / "sub" / "a.jsonl"))
        with pytest.raises(OSError):
            exp.export(batch(1))
