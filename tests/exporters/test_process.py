"""Tests for logpipe.exporters.process: an exporter run in a child process, and what happens when that child fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

import logpipe
from conftest import wait_until
from logpipe import record
from logpipe.config import setting
from logpipe.exporters.base import Exporter, ExportResult, PartialFailure
from logpipe.exporters.file import FileExporter, FileOptions
from logpipe.exporters.process import ProcessExporter, isolate
from logpipe.testing import InMemoryExporter


def records(n: int) -> list[record.Record]:
    return [record.info(f"m{i}", "t.f", {"i": i}) for i in range(n)]


def file_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["Id"] for line in path.read_bytes().splitlines()] if path.exists() else []


@dataclass(frozen=True)
class PickyOptions:
    path: str = setting("", "File the accepted records are appended to.")


class PickyExporter(Exporter):
    """Writes records whose ``i`` field is even to a file and refuses the odd ones (PartialFailure).

    Module level, so the child can import it by name; it reports its pid in
    ``stats()`` so the tests can see where it ran.
    """

    Options = PickyOptions
    options: PickyOptions

    def export(self, batch: Sequence[record.Record]) -> ExportResult | PartialFailure:
        odd = [r for r in batch if r.decoded()["Field"]["i"] % 2]
        with open(self.options.path, "ab") as out:
            out.writelines(r.payload + b"\n" for r in batch if r not in odd)
        return PartialFailure(odd) if odd else ExportResult.SUCCESS

    def stats(self) -> int:
        return os.getpid()


class TestInAChild:
    def test_records_arrive_in_order_written_by_another_process(self, tmp_path: Path) -> None:
        path = tmp_path / "out.jsonl"
        exporter = ProcessExporter(FileExporter(FileOptions(path=path)))
        sent = records(2_000)
        try:
            for i in range(0, len(sent), 500):
                assert exporter.export(sent[i : i + 500]) is ExportResult.SUCCESS
            assert exporter.force_flush(10)
            child = exporter._child
            assert child is not None and child.pid != os.getpid()
        finally:
            exporter.shutdown(10)
        assert file_ids(path) == [r.id for r in sent]
        assert child.proc.poll() == 0, "the child exits by itself after CLOSE"
        assert "in a child process" in exporter.describe()

    def test_flush_before_any_batch_is_true(self, tmp_path: Path) -> None:
        """Nothing was exported, so nothing is buffered: a flush succeeds without starting a child."""
        exporter = ProcessExporter(FileExporter(FileOptions(path=tmp_path / "out.jsonl")))
        assert exporter.force_flush(5)
        assert exporter._child is None
        exporter.shutdown(5)

    def test_partial_failures_come_back_as_the_same_records(self, tmp_path: Path) -> None:
        exporter = ProcessExporter(PickyExporter(PickyOptions(path=str(tmp_path / "even.jsonl"))))
        batch = records(10)
        try:
            result = exporter.export(batch)
            assert isinstance(result, PartialFailure)
            assert [r.id for r in result.failed] == [r.id for r in batch[1::2]]
            assert exporter.stats() not in (None, os.getpid())
        finally:
            exporter.shutdown(10)
        assert file_ids(tmp_path / "even.jsonl") == [r.id for r in batch[::2]]

    def test_pipelined_batches_through_a_dispatcher(self, tmp_path: Path) -> None:
        """With max_in_flight > 1 several batches are in the pipe at once; the counters still balance."""
        inner = FileExporter(FileOptions(path=tmp_path / "out.jsonl"))
        inner.max_in_flight = 4
        d = logpipe.Dispatcher(ProcessExporter(inner), batch_size=100, batch_delay=0.01, queue_size=10_000)
        sent = records(3_000)
        for r in sent:
            assert d.submit(r)
        assert d.force_flush(30)
        s = d.stats()
        assert (s.sent, s.failed, s.spilled, s.in_flight) == (3_000, 0, 0, 0)
        d.shutdown(10)
        assert file_ids(tmp_path / "out.jsonl") == [r.id for r in sent]


class TestChildFailures:
    def test_killed_child_fails_its_batches_to_the_fallback_and_is_replaced(self, tmp_path: Path) -> None:
        """SIGKILL the child: what it had not answered is spilled, nothing is lost, a new child takes over."""
        path = tmp_path / "out.jsonl"
        exporter = ProcessExporter(FileExporter(FileOptions(path=path)), respawn_backoff=0.0)
        fallback = InMemoryExporter()
        d = logpipe.Dispatcher(exporter, fallback=fallback, batch_size=50, batch_delay=0.01)
        first, second = records(500), records(500)
        for r in first:
            d.submit(r)
        assert d.force_flush(30)
        old = exporter._child
        assert old is not None
        os.kill(old.pid, signal.SIGKILL)
        old.proc.wait(10)
        for r in second:
            d.submit(r)
        assert d.force_flush(30)
        d.shutdown(10)
        s = d.stats()
        assert s.submitted == s.sent + s.spilled == 1_000 and s.failed == 0
        delivered = set(file_ids(path)) | set(fallback.ids())
        assert delivered == {r.id for r in first + second}
        assert exporter._child is None or exporter._child.pid != old.pid

    def test_an_exporter_the_child_cannot_import_runs_in_process(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        class Local(InMemoryExporter):  # defined in a function: cannot be pickled by name
            pass

        local = Local()
        exporter = ProcessExporter(local)
        batch = records(3)
        assert exporter.export(batch) is ExportResult.SUCCESS
        assert local.ids() == [r.id for r in batch]
        assert "in process" in exporter.describe()
        assert "cannot run in a child process" in capsys.readouterr().err
        exporter.shutdown()

    def test_a_host_binary_that_is_not_python_means_in_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Under uWSGI sys.executable is the server's binary: do not start it, export in process."""
        monkeypatch.setattr(sys, "executable", "/usr/bin/uwsgi")
        path = tmp_path / "out.jsonl"
        exporter = ProcessExporter(FileExporter(FileOptions(path=path)))
        batch = records(3)
        assert exporter.export(batch) is ExportResult.SUCCESS
        exporter.shutdown()
        assert file_ids(path) == [r.id for r in batch]
        assert "is not a Python interpreter" in capsys.readouterr().err


class TestIsolationSetting:
    def test_auto_follows_the_exporter_class(self, tmp_path: Path) -> None:
        file_exporter = FileExporter(FileOptions(path=tmp_path / "a.jsonl"))
        assert isolate(file_exporter, "auto") is file_exporter
        assert isinstance(isolate(file_exporter, "process"), ProcessExporter)
        from logpipe.exporters.kafka import KafkaExporter, KafkaOptions

        # kafka-python's threads hold the GIL: a child process; librdkafka's are C threads: in process.
        assert isinstance(isolate(KafkaExporter(KafkaOptions(client="kafka-python")), "auto"), ProcessExporter)
        librdkafka = KafkaExporter(KafkaOptions(client="confluent-kafka"))
        assert isolate(librdkafka, "auto") is librdkafka
        kafka = KafkaExporter()
        assert isolate(kafka, "thread") is kafka

    def test_env_var_is_validated_at_configure_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LOGPIPE_ISOLATION", "sidecar")
        with pytest.raises(logpipe.ConfigError, match="LOGPIPE_ISOLATION"):
            logpipe.configure(exporter="file")

    def test_configure_with_process_isolation_keeps_the_fallback_in_process(self, tmp_path: Path) -> None:
        pipeline = logpipe.configure(exporter="kafka", isolation="process")
        d = pipeline.dispatchers[0]
        assert isinstance(d.exporter, ProcessExporter)
        assert d.fallback is not None and not isinstance(getattr(d.fallback, "inner", None), ProcessExporter)
        pipeline.shutdown(5)


class TestApplicationLifecycle:
    def run_app(self, tmp_path: Path, body: str) -> subprocess.Popen[str]:
        script = textwrap.dedent(
            """
            import os, sys, time, structlog, logpipe
            structlog.configure(processors=logpipe.processors(
                exporter="file", isolation="process", batch_delay=3600, batch_size=100000, local_render="none"))
            log = structlog.get_logger()
            for i in range(300):
                log.info("app", i=i)
            logpipe.flush(10)  # the child exists and has the first record
            child = logpipe.current().dispatchers[0].exporter._child.pid
            for i in range(300, 600):
                log.info("app", i=i)
            print(child, flush=True)
            """
        )
        return subprocess.Popen(
            [sys.executable, "-c", script + textwrap.dedent(body)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            # A shell's background jobs start with SIGINT ignored, and Python then installs no
            # KeyboardInterrupt handler: give the app the default disposition, as in a terminal.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def test_ctrl_c_reaches_the_whole_group_but_the_child_outlives_the_final_flush(self, tmp_path: Path) -> None:
        """SIGINT to the process group: the app flushes its queue through the child, which ignored the signal."""
        proc = self.run_app(tmp_path, "time.sleep(60)\n")
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        assert len(set(file_ids(tmp_path / "logs" / "logpipe.jsonl"))) == 600
        wait_until(lambda: not _alive(child), 10)

    def test_child_exits_when_the_application_is_killed(self, tmp_path: Path) -> None:
        proc = self.run_app(tmp_path, "time.sleep(60)\n")
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert _alive(child)
        proc.kill()
        proc.wait(10)
        wait_until(lambda: not _alive(child), 10)
        assert len(set(file_ids(tmp_path / "logs" / "logpipe.jsonl"))) >= 300


def _alive(pid: int) -> bool:
    """True while *pid* runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
