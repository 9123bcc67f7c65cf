"""The spool exporter: the durable fallback, replaying in a background thread, across fork."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog

import logpipe
from conftest import wait_until
from logpipe.exporters.base import ExportResult
from logpipe.exporters.spool import SpoolExporter, SpoolOptions
from logpipe.record import Record, info
from logpipe.spool import DirectoryLock, Spool
from logpipe.testing import InMemoryExporter


def records(n: int, prefix: str = "r") -> list[Record]:
    return [info(f"{prefix}{i:05d}", "tests.exporters.test_spool", {"n": f"{i:05d}"}) for i in range(n)]


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

    def test_spool_exporter_reports_failure_when_refused(self, tmp_path: Path) -> None:
        """The exporter answers FAILURE for a refused batch, so the dispatcher counts it failed."""
        exporter = SpoolExporter(SpoolOptions(dir=tmp_path, max_bytes=300, full="drop_newest", replay=False))
        assert exporter.export(records(1)) is ExportResult.SUCCESS
        assert exporter.export(records(5)) is ExportResult.FAILURE
        assert exporter.stats().dropped == 5
        exporter.shutdown()

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
