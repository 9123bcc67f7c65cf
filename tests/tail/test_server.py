"""logpipe.tail.server: the Tailer loop (pipelining, restart, failures, retries, dead letters, stop)."""

from __future__ import annotations

from pathlib import Path

from conftest import wait_until
from logpipe import deadletter

from .support import FakeKafka, Running, kafkalog_lines, once, options, registry_offsets, write


class TestDelivery:
    def test_restart_resumes_from_the_registry(self, tmp_path: Path) -> None:
        log = tmp_path / "app.log"
        first, second = kafkalog_lines(50), kafkalog_lines(30, 50)
        write(log, first)
        exporter = FakeKafka()
        opts = options(tmp_path, "app.log", batch_size=7)
        assert once(opts, exporter).sent == 50
        write(log, second)
        stats = once(opts, exporter)
        assert stats.sent == 30 and stats.wrapped == 0
        assert exporter.payloads() == first + second
        assert 1 < exporter.most_outstanding <= FakeKafka.max_in_flight  # batches were pipelined

    def test_a_file_that_never_goes_quiet_is_checkpointed_while_it_is_read(self, tmp_path: Path) -> None:
        """The registry is written every registry_flush seconds while batches keep going, not only when idle:
        a SIGKILL in the middle of a long file resends from the last checkpoint, not from the start."""
        import threading
        import time

        class Slow(FakeKafka):
            def export(self, batch):  # type: ignore[no-untyped-def]
                time.sleep(0.002)  # a broker a little slower than the reader: the tailer is never idle
                return super().export(batch)

        log = tmp_path / "app.log"
        lines = kafkalog_lines(8_000)
        write(log, lines)
        size = log.stat().st_size
        opts = options(tmp_path, "app.log", batch_size=50, registry_flush=0.05)
        seen: list[int] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                if opts.registry.exists():
                    seen.extend(registry_offsets(opts).values())
                done.wait(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            assert once(opts, Slow()).sent == len(lines)
        finally:
            done.set()
            watcher.join()
        assert seen and min(seen) < size, "the registry was first written at the end of the file"
        assert list(registry_offsets(opts).values()) == [size]


class TestFailures:
    def test_unavailable_kafka_holds_the_file_then_resumes(self, tmp_path: Path) -> None:
        """FAILURE: nothing acknowledged, the registry stays, the records are retried until they go, once each."""
        log = tmp_path / "app.log"
        lines = kafkalog_lines(100)
        write(log, lines)
        exporter = FakeKafka()
        exporter.fail = True
        opts = options(tmp_path, "app.log", batch_size=10)
        running = Running(opts, exporter)
        try:
            wait_until(lambda: running.tailer.stats.retries >= 3)
            stats = running.tailer.stats
            assert stats.sent == 0 and stats.state == "waiting for Kafka"
            assert stats.lines_read <= 10 * FakeKafka.max_in_flight  # the file is the buffer
            assert registry_offsets(opts) == {str(log): 0}
            exporter.fail = False
            wait_until(lambda: running.tailer.stats.sent == 100)
        finally:
            running.stop()
        assert sorted(exporter.payloads()) == sorted(lines)
        assert registry_offsets(opts) == {str(log): log.stat().st_size}

    def test_refused_records_go_to_the_dead_letter_file(self, tmp_path: Path) -> None:
        """A record refused max_attempts times is written to the dead-letter file; the others and the offset go on."""
        log = tmp_path / "app.log"
        lines = kafkalog_lines(20)
        poison = lines[7]
        write(log, lines)
        exporter = FakeKafka()
        exporter.refuse.add(poison)
        opts = options(tmp_path, "app.log", batch_size=5, max_attempts=3)
        stats = once(opts, exporter)
        assert stats.dead_lettered == 1 and stats.sent == 19
        assert exporter.payloads() == [p for p in lines if p != poison]
        (letter,) = deadletter.read(opts.dead_letter)
        assert deadletter.original(letter) == poison  # the payload as it would have been sent
        assert letter["source"] == {"path": str(log), "offset": 7 * (len(lines[0]) + 1)}
        assert "refused" in letter["reason"] and "3 times" in letter["reason"]
        assert registry_offsets(opts) == {str(log): log.stat().st_size}
        assert exporter.calls == 4 + 2  # 4 batches, the poisoned one sent twice more (3 attempts)

    def test_dead_letter_source_names_each_file_and_line(self, tmp_path: Path) -> None:
        """Refused records of two files in one batch each name their own file and the offset of their line."""
        a, b = tmp_path / "a.log", tmp_path / "b.log"
        write(a, [b"keep a", b"poison a"])
        write(b, [b"poison b", b"keep b"])
        exporter = FakeKafka()
        exporter.refuse.add(b"poison")
        opts = options(tmp_path, "*.log", max_attempts=1)
        stats = once(opts, exporter)
        assert (stats.dead_lettered, stats.sent) == (2, 2)
        sources = sorted((d["source"]["path"], d["source"]["offset"]) for d in deadletter.read(opts.dead_letter))
        assert sources == [(str(a), len(b"keep a\n")), (str(b), 0)]

    def test_an_exporter_that_raises_is_a_failure_retried(self, tmp_path: Path) -> None:
        """begin() raising counts as FAILURE: nothing is acknowledged, the loop goes on, and the records are retried."""
        log = tmp_path / "app.log"
        lines = kafkalog_lines(10)
        write(log, lines)
        exporter = FakeKafka()
        exporter.explode = True
        opts = options(tmp_path, "app.log")
        running = Running(opts, exporter)
        try:
            wait_until(lambda: running.tailer.stats.retries >= 2)
            assert running.tailer.stats.sent == 0
            assert registry_offsets(opts) == {str(log): 0}
            exporter.explode = False
            wait_until(lambda: running.tailer.stats.sent == 10)
        finally:
            running.stop()
        assert exporter.payloads() == lines

    def test_stop_ends_a_long_backoff(self, tmp_path: Path) -> None:
        """A stop during a retry wait returns at once, not after the backoff (here a minute)."""
        write(tmp_path / "app.log", kafkalog_lines(3))
        exporter = FakeKafka()
        exporter.fail = True
        opts = options(tmp_path, "app.log", backoff=60.0, max_backoff=60.0, shutdown_timeout=0.0)
        running = Running(opts, exporter)
        wait_until(lambda: running.tailer.stats.state == "waiting for Kafka")
        running.tailer.stop()
        running.thread.join(10)
        assert not running.thread.is_alive()
        assert running.tailer.unacknowledged == 3

    def test_stop_while_failing_keeps_the_offset(self, tmp_path: Path) -> None:
        log = tmp_path / "app.log"
        write(log, kafkalog_lines(5))
        exporter = FakeKafka()
        exporter.fail = True
        opts = options(tmp_path, "app.log")
        running = Running(opts, exporter)
        wait_until(lambda: running.tailer.stats.retries >= 1)
        running.stop()
        assert running.tailer.unacknowledged == 5
        assert registry_offsets(opts) == {str(log): 0}
