"""logpipe.tail.harvester: reading one file (lines, CRLF, empty lines, partial and long lines, truncation)."""

from __future__ import annotations

from pathlib import Path

import orjson

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
