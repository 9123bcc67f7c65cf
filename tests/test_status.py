"""Tests for logpipe.status and ``logpipe status``: what waits where, and the health-check exit code."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import Service
from logpipe.cli import main
from logpipe.record import make_record
from logpipe.spool import Spool
from logpipe.status import SpoolCounter, file_positions
from logpipe.tail import Registry, RegistryEntry


def spool_with(directory: Path, n: int, age: float) -> Spool:
    spool = Spool(directory)
    spool.append([make_record(type="info", msg=f"m{i}", ts=time.time() - age).payload for i in range(n)])
    return spool


def status(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["status", *args], env={"COLUMNS": "120"})
    return result.exit_code, result.output


class TestSpoolCounter:
    def test_counts_what_is_left_after_commits_and_appends(self, tmp_path: Path) -> None:
        """Records and bytes after a partial delivery, then after more appends (counted incrementally)."""
        spool = spool_with(tmp_path / "kafka", 100, age=60)
        counter = SpoolCounter()
        assert counter.backlog(tmp_path / "kafka").records == 100
        chunk = spool.read(30)
        assert chunk is not None
        spool.commit(chunk, 30)
        backlog = counter.backlog(tmp_path / "kafka")
        assert backlog.records == 70 and backlog.bytes == spool.stats().pending_bytes
        spool.append([make_record(type="info", msg="late").payload] * 5)
        assert counter.backlog(tmp_path / "kafka").records == 75
        assert SpoolCounter().backlog(tmp_path / "kafka").records == 75  # same as a fresh count
        assert 55 < backlog.age() < 600  # the oldest waiting record's Time
        spool.close()


class TestCommand:
    def test_backlog_older_than_max_age_is_stuck(self, tmp_path: Path) -> None:
        """A spool whose oldest record waited 1 h: exit 1 with --max-age 5m, 0 with --max-age 2h."""
        spool_with(tmp_path / "spool" / "kafka", 250, age=3600).close()
        spool_with(tmp_path / "spool" / "elasticsearch", 3, age=1).close()
        code, out = status("--spool-dir", str(tmp_path / "spool"), "--max-age", "5m")
        assert code == 1, out
        assert "kafka" in out and "250" in out and "elasticsearch" in out
        assert "stuck" in out and "spool" in out
        code, out = status("--spool-dir", str(tmp_path / "spool"), "--max-age", "2h")
        assert code == 0 and "nothing stuck" in out

    def test_settings_from_the_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """LOGPIPE_SPOOL_DIR is where the spool is looked for; an empty machine is healthy."""
        monkeypatch.setenv("LOGPIPE_SPOOL_DIR", str(tmp_path / "elsewhere"))
        code, out = status()
        assert code == 0 and "nothing spooled" in out
        spool_with(tmp_path / "elsewhere" / "kafka", 1, age=7200).close()
        assert status()[0] == 1

    def test_bad_max_age_names_the_flag(self) -> None:
        code, out = status("--max-age", "soon")
        assert code == 2 and "--max-age" in out

    def test_tail_positions_against_file_sizes(self, tmp_path: Path) -> None:
        """The registry's acknowledged offset next to the file's size, and how far behind that is."""
        log = tmp_path / "app.log"
        log.write_bytes(b"x" * 5000)
        st = log.stat()
        registry = Registry(tmp_path / "reg.json")
        registry.entries[(st.st_dev, st.st_ino)] = RegistryEntry(st.st_dev, st.st_ino, str(log), 1000)
        registry.entries[(1, 2)] = RegistryEntry(1, 2, str(tmp_path / "gone.log"), 10)
        registry.save()
        (position, gone) = sorted(file_positions(registry.entries.values()), key=lambda p: p.path != str(log))
        assert (position.offset, position.size, position.behind) == (1000, 5000, 4000)
        assert gone.size is None and gone.behind is None
        code, out = status("--registry", str(tmp_path / "reg.json"), "--spool-dir", str(tmp_path / "none"))
        assert code == 0 and "3.9 KiB" in out and "gone" in out


@pytest.mark.kafka
def test_shipper_group_lag(kafka_service: Service) -> None:
    """With Kafka reachable: the group's committed offset, end and lag per partition; --max-lag makes it stuck."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = f"lpstatus-{uuid.uuid4().hex[:8]}", f"lpstatus-g-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_service.address, acks="all")
    for n in range(10):
        producer.send(topic, f"m{n}".encode(), partition=0)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_service.address, group_id=group, enable_auto_commit=False)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1)})
    consumer.close()
    args = ("--bootstrap-servers", kafka_service.address, "--group", group)
    code, out = status(*args)
    assert code == 0, out
    assert f"{topic}[0]" in out and " 6 " in out  # committed 4, end 10
    code, out = status(*args, "--max-lag", "5")
    assert code == 1 and "lags 6" in out
