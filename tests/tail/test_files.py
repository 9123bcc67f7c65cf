"""logpipe.tail.files (with paths, fingerprint): which files are followed, from where, across rotation, truncation."""

from __future__ import annotations

from pathlib import Path

import orjson

from conftest import wait_until

from .support import FakeKafka, Running, kafkalog_lines, once, options, write


class TestFiles:
    def test_start_end_skips_what_is_there(self, tmp_path: Path) -> None:
        """--start end: files known at start begin at their end; a file appearing later from its start."""
        old = tmp_path / "old.log"
        write(old, [b"before"])
        exporter = FakeKafka()
        running = Running(options(tmp_path, "*.log", start="end"), exporter)
        try:
            wait_until(lambda: running.tailer.stats.files_open == 1)
            write(old, [b"after"])
            write(tmp_path / "new.log", [b"new file"])
            wait_until(lambda: running.tailer.stats.sent == 2)
        finally:
            running.stop()
        assert sorted(orjson.loads(p)["Msg"] for p in exporter.payloads()) == ["after", "new file"]

    def test_truncated_file_is_read_again_from_the_start(self, tmp_path: Path) -> None:
        log = tmp_path / "app.log"
        write(log, [b"one", b"two", b"three"])
        exporter = FakeKafka()
        running = Running(options(tmp_path, "app.log"), exporter)
        try:
            wait_until(lambda: running.tailer.stats.sent == 3)
            write(log, [b"new"], mode="wb")  # truncate and write less than was there
            wait_until(lambda: running.tailer.stats.sent == 4)
        finally:
            stats = running.stop()
        assert stats.truncations == 1
        assert [orjson.loads(p)["Msg"] for p in exporter.payloads()] == ["one", "two", "three", "new"]

    def test_truncated_while_stopped(self, tmp_path: Path) -> None:
        """The registry's fingerprint of the first bytes tells a rewritten file even when it grew past the offset."""
        log = tmp_path / "app.log"
        write(log, [b"one", b"two"])
        exporter = FakeKafka()
        opts = options(tmp_path, "app.log")
        once(opts, exporter)
        write(log, [b"other content, longer than before"], mode="wb")
        once(opts, exporter)
        assert [orjson.loads(p)["Msg"] for p in exporter.payloads()] == [
            "one",
            "two",
            "other content, longer than before",
        ]

    def test_rotation_by_rename_loses_nothing(self, tmp_path: Path) -> None:
        """The old file is finished (its unterminated last line too, once it is quiet), the new one picked up."""
        log = tmp_path / "app.log"
        exporter = FakeKafka()
        running = Running(options(tmp_path, "app.log"), exporter)  # the rotated name does not match
        expected: list[bytes] = []
        try:
            for generation in range(3):
                lines = kafkalog_lines(200, generation * 200)
                write(log, lines[:100])
                seen = generation * 201 + 100  # the new file is open: its first lines were read
                wait_until(lambda: running.tailer.stats.lines_read >= seen)  # noqa: B023
                write(log, lines[100:])
                expected += lines
                with log.open("ab") as out:
                    out.write(b"last words")  # no newline: sent when the rotated file is closed
                log.rename(tmp_path / f"app.log.{generation}")
            wait_until(lambda: running.tailer.stats.sent == 603 and running.tailer.stats.files_open == 0)
        finally:
            stats = running.stop()
        payloads = exporter.payloads()
        assert [p for p in payloads if p in set(expected)] == expected  # each once, in order
        assert [orjson.loads(p)["Msg"] for p in payloads if p not in set(expected)] == ["last words"] * 3
        assert stats.rotations == 3

    def test_own_files_are_not_followed(self, tmp_path: Path) -> None:
        """A pattern that matches the registry or the dead-letter file does not tail them."""
        write(tmp_path / "app.log", [b"x"])
        opts = options(tmp_path, "*", registry=tmp_path / "registry.json", dead_letter=tmp_path / "dead.jsonl")
        exporter = FakeKafka()
        once(opts, exporter)
        once(opts, exporter)
        assert len(exporter.payloads()) == 1
