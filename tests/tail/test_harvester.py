"""logpipe.tail.harvester: reading one file (lines, CRLF, empty lines, partial and long lines, truncation)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from logpipe.record import Record
from logpipe.tail.harvester import Harvester
from logpipe.tail.stats import TailStats

from .support import FakeKafka, once, options, registry_offsets


class TestThroughTheTailer:
    def test_lines_split_partial_last_line_waits(self, tmp_path: Path) -> None:
        """CRLF and LF lines, an empty line skipped, and half a line held back until its newline comes."""
        log = tmp_path / "app.log"
        log.write_bytes(b"one\r\n\ntwo\nthr")
        opts = options(tmp_path, "app.log")
        exporter = FakeKafka()
        stats = once(opts, exporter)
        assert [orjson.loads(p)["Msg"] for p in exporter.payloads()] == ["one", "two"]
        assert (stats.lines_read, stats.sent, stats.wrapped, stats.empty) == (3, 2, 2, 1)
        assert registry_offsets(opts) == {str(log): len(b"one\r\n\ntwo\n")}
        with log.open("ab") as out:
            out.write(b"ee\n")
        once(opts, exporter)
        assert [orjson.loads(p)["Msg"] for p in exporter.payloads()] == ["one", "two", "three"]
        assert orjson.loads(exporter.payloads()[2])["Field"]["log"]["offset"] == len(b"one\r\n\ntwo\n")

    def test_long_lines_are_split_and_counted(self, tmp_path: Path) -> None:
        """Pieces of max_line_bytes, flagged, with their offsets; even a long line still being written."""
        log = tmp_path / "app.log"
        log.write_bytes(b"a" * 40 + b"\nshort\n" + b"b" * 20)
        exporter = FakeKafka()
        opts = options(tmp_path, "app.log", max_line_bytes=16)
        stats = once(opts, exporter)
        docs = [orjson.loads(p) for p in exporter.payloads()]
        assert [d["Msg"] for d in docs] == ["a" * 16, "a" * 16, "a" * 8, "short", "b" * 16]
        assert [d["Field"]["log"]["offset"] for d in docs] == [0, 16, 32, 41, 47]
        assert [d["Field"]["log"].get("flags") for d in docs] == [["split"]] * 3 + [None, ["split"]]
        assert stats.too_long == 2
        assert registry_offsets(opts) == {str(log): 47 + 16}  # the rest of the b line waits for its end


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Path, Harvester]]:
    """A harvester on an empty file app.log, closed after the test."""
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    try:
        yield path, Harvester((st.st_dev, st.st_ino), str(path), fd, 0, (0, 0))
    finally:
        os.close(fd)


def drain(h: Harvester, max_line: int = 1024) -> tuple[list[str], list[int]]:
    """Read *h* to its end and take everything: (Msg of each record, offset of each record)."""
    stats = TailStats()
    records: list[Record] = []
    offsets: list[int] = []
    while h.read(max_line, stats):
        pass
    h.take(1000, 1 << 20, records, offsets, stats)
    return [orjson.loads(r.payload)["Msg"] for r in records], offsets


class TestHarvester:
    def test_offsets_in_step_with_records(self, opened: tuple[Path, Harvester]) -> None:
        """Each record's offset is where its line starts; empty lines give no record but move the offset."""
        path, h = opened
        path.write_bytes(b"one\n\ntwo\r\nthr")
        assert drain(h) == (["one", "two"], [0, 5])
        assert (h.pos, h.read_to, h.partial) == (10, 13, b"thr")

    def test_partial_line_completes_on_the_next_read(self, opened: tuple[Path, Harvester]) -> None:
        path, h = opened
        path.write_bytes(b"a\npar")
        assert drain(h) == (["a"], [0])
        with path.open("ab") as out:
            out.write(b"tial\n")
        assert drain(h) == (["partial"], [2])

    def test_long_partial_line_is_sent_in_pieces_before_its_end(self, opened: tuple[Path, Harvester]) -> None:
        """A line longer than max_line that is still being written: its complete pieces go out, the rest waits."""
        path, h = opened
        path.write_bytes(b"x" * 40)
        assert drain(h, 16) == (["x" * 16, "x" * 16], [0, 16])
        with path.open("ab") as out:
            out.write(b"\nnext\n")
        assert drain(h, 16) == (["x" * 8, "next"], [32, 41])

    def test_truncation_starts_a_new_generation_from_zero(self, opened: tuple[Path, Harvester]) -> None:
        path, h = opened
        path.write_bytes(b"one\ntwo\n")
        drain(h)
        h.committed = h.pos
        generation = h.generation
        path.write_bytes(b"new\n")
        assert drain(h) == (["new"], [0])
        assert h.generation == generation + 1 and h.committed == 0

    def test_flush_partial_makes_the_last_line(self, opened: tuple[Path, Harvester]) -> None:
        """A finished (rotated) file's unterminated line becomes a line; its offset covers it exactly."""
        path, h = opened
        path.write_bytes(b"a\nlast")
        drain(h)
        assert h.flush_partial()
        assert drain(h) == (["last"], [2])
        assert h.pos == 6
