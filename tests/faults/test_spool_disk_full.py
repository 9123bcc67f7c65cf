"""The spool's disk full: a Kafka exporter whose broker is unreachable spills into a spool on a 2 MiB filesystem.

The spool directory is a tmpfs of 2 MiB mounted for the test (we run as root); where mounting is
not possible the test falls back to a plain directory and ``max_bytes`` of 2 MiB (the spool's own
``drop_oldest`` policy then does the dropping), and its matrix row says which one ran. The broker
is "unreachable" through a closed `TcpGate` in front of the shared broker, which is never stopped.

Expected: no exception out of a log call and no traceback, a clear line on stderr, every record
not accepted counted (``failed`` on a full disk, the spool's ``dropped`` under its policy), and
every record the spool accepted delivered once the disk has room and the broker answers.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog

import logpipe
from cluster.conftest import FaultMatrix
from conftest import KAFKA_CLIENTS, Service, consume_all, wait_until
from logpipe.exporters.spool import SpoolExporter
from logpipe.record import Record
from logpipe.spool import Spool

from .proxies import TcpGate

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SIZE = 2 << 20
#: Part of the small disk taken by another file before the test logs; deleted to "free space".
BALLAST = 512 << 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory, how): a 2 MiB tmpfs ("tmpfs"), or a plain directory when mounting fails ("max_bytes")."""
    directory = tmp_path / "small"
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(directory)], capture_output=True
    )
    if mounted.returncode != 0:
        yield directory, "max_bytes"
        return
    try:
        yield directory, "tmpfs"
    finally:
        logpipe.shutdown(timeout=5.0)  # nothing of the spool may stay open on it
        subprocess.run(["umount", "-l", str(directory)], check=False)


def spooled_ids(directory: Path) -> set[str]:
    """The Id of every whole record in the spool's segments (a line torn by the full disk is not one)."""
    ids = set()
    for segment in Spool(directory).segments():
        for line in segment.read_bytes().splitlines(keepends=True):
            if line.endswith(b"\n"):
                ids.add(Record.from_json(line.rstrip(b"\n")).id)
    return ids


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_spool_disk_full_then_room_and_broker_back(
    client: str,
    kafka_service: Service,
    small_disk: tuple[Path, str],
    topic: str,
    matrix: FaultMatrix,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Disk full: counted, said on stderr, no traceback; room again: spooled again; broker back: all spooled arrive."""
    disk, how = small_disk
    gate = TcpGate(kafka_service.address)
    spool_options: dict[str, object] = {"dir": disk / "spool", "replay_interval": 0.2}
    if how == "max_bytes":
        spool_options["max_bytes"] = SIZE - BALLAST
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * BALLAST)
    pipeline = logpipe.configure(
        exporter="kafka",
        exporter_options={
            "kafka": {"bootstrap_servers": gate.address, "topic": topic, "client": client},
            "spool": spool_options,
        },
        local_render="none",
    )
    structlog.configure(processors=pipeline.processors())
    log = structlog.get_logger()
    spool = getattr(pipeline.dispatchers[0].fallback, "inner", None)
    assert isinstance(spool, SpoolExporter)
    padding = "x" * 600  # about 1 KiB a record: the 2 MiB fill after ~1,500 records
    started = time.monotonic()
    try:
        # 1. broker unreachable, the disk fills up
        full_n = 4_000
        for i in range(full_n):
            log.info("while the broker is unreachable", seq=i, padding=padding)
        assert logpipe.flush(60)
        full = logpipe.stats()["kafka"]
        assert full.submitted == full_n and (full.queued, full.in_flight, full.sent) == (0, 0, 0), full
        assert full.spilled + full.failed + full.dropped == full_n, full
        spool_stats = spool.stats()
        refused = full.failed + spool_stats.dropped
        assert refused > 0, (full, spool_stats)  # the disk (or the budget) did fill up
        err = capfd.readouterr().err
        assert "Traceback" not in err, err
        if how == "tmpfs":
            assert "No space left on device" in err, err
            assert str(spool.directory) in err, err  # the message says where the disk is full
        # 2. room again (the ballast goes), the broker still unreachable: the spool takes records again
        ballast.unlink()
        room_n = 300
        for i in range(full_n, full_n + room_n):
            log.info("room again", seq=i, padding=padding)
        assert logpipe.flush(60)
        room = logpipe.stats()["kafka"]
        assert room.spilled - full.spilled == room_n, room
        accepted = spooled_ids(disk / "spool" / "kafka")
        # 3. the broker answers: everything the spool holds is replayed
        gate.open()
        wait_until(lambda: spool.stats().pending_bytes == 0, timeout=90, interval=0.2)
        after = spool.stats()
        messages = consume_all(kafka_service.address, topic)
    finally:
        gate.close()
    err += capfd.readouterr().err
    assert "Traceback" not in err, err
    ids = [orjson.loads(m.value)["Id"] for m in messages]
    seqs = {orjson.loads(m.value)["Field"]["seq"] for m in messages}
    assert len(ids) == len(set(ids)), "a spooled record was delivered twice"
    assert accepted <= set(ids), f"{len(accepted - set(ids))} records accepted into the spool are missing"
    if how == "tmpfs":
        # A write the full disk took in part is cut back: the counters are exact, no line is torn.
        assert len(ids) == len(accepted) == room.spilled and after.torn == 0, (len(ids), len(accepted), room, after)
    assert set(range(full_n, full_n + room_n)) <= seqs
    stats = logpipe.stats()["kafka"]
    total = full_n + room_n
    assert stats.submitted == total and stats.sent + stats.spilled + stats.failed + stats.dropped == total
    lines = [line for line in err.splitlines() if line.startswith("logpipe:")]
    matrix.add(
        f"the spool's disk full ({'2 MiB tmpfs' if how == 'tmpfs' else 'max_bytes 1.5 MiB'}), Kafka unreachable, "
        f"then room again, then the broker back ({client})",
        test=f"test_spool_disk_full_then_room_and_broker_back[{client}]",
        client=client,
        how=how,
        logged=total,
        accepted_into_spool=stats.spilled,
        whole_records_in_spool=len(accepted),
        failed_disk_full=stats.failed,
        dropped_by_queue=stats.dropped,
        dropped_by_spool_policy=after.dropped,
        torn_lines=after.torn,
        accepted_lost=len(accepted - set(ids)),
        kafka_messages=len(ids),
        kafka_duplicates=len(ids) - len(set(ids)),
        delivered_though_counted_failed=len(ids) - stats.spilled,
        stderr=lines[:3],
        seconds=round(time.monotonic() - started, 1),
    )
