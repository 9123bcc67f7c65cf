"""The per-line profile of workload 4 (bench/tail_throughput.py): stages that account for the tailer's thread."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from conftest import Service

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import kafka_throughput, tail_throughput  # noqa: E402

pytest.importorskip("confluent_kafka")


@pytest.mark.kafka
def test_the_stages_account_for_the_tailer_thread(
    kafka_service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_throughput, "KAFKA_BOOTSTRAP", kafka_service.address)
    from logpipe.exporters.kafka_confluent_producer import ConfluentProducer
    from logpipe.tail.harvester import Harvester

    read, send = Harvester.read, ConfluentProducer.send
    path = tmp_path / "app.jsonl"
    path.write_bytes(b"".join(r.payload + b"\n" for r in kafka_throughput.make_records(3000)))
    profile = tail_throughput.profile_tail(path, f"logpipe-test-bench-tail-{uuid.uuid4().hex[:10]}")
    assert profile["sent"] == 3000
    stages = [profile[key] for key in tail_throughput.STAGES]
    assert all(v >= 0 for v in stages[:-1]) and profile["thread"] > 0
    assert sum(stages) == pytest.approx(profile["thread"])  # "other" is the rest of the thread
    assert (Harvester.read, ConfluentProducer.send) == (read, send)  # the timers are gone
    note = tail_throughput.profile_note([profile], 3000)
    assert note.count("\n|") == len(tail_throughput.STAGES) + 5  # header, rule, the stages, three totals


def test_the_tail_command_is_found_though_sub_commands_load_lazily() -> None:
    """The workload skips when there is no `logpipe tail`; with the lazy CLI group it must still find it."""
    assert tail_throughput.tail_available()
