"""A what-if, not a product: logpipe's exporter contract on confluent-kafka (librdkafka).

The benchmark uses it to show what the Kafka path would cost the
application if the client's work ran in C threads outside the GIL. Same
message shape as `logpipe.exporters.kafka` (value = the KafkaLog JSON, header
``id`` and ``trace_id``), same delivery contract (an export returns once every
record is acknowledged or failed; failures are handed back), equivalent
producer settings (acks, idempotence with acks=all, 5 ms linger, 256 KiB
batches). No outage detection, no fork handling: it is a measuring device.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def make(package: Any, bootstrap: str, topic: str, acks: str = "all") -> Any:
    """An instance of an `Exporter` subclass of *package* (logpipe or a patched copy)."""
    from confluent_kafka import Producer

    class ConfluentExporter(package.Exporter):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.producer = Producer(
                {
                    "bootstrap.servers": bootstrap,
                    "acks": "all" if acks == "all" else acks,
                    "enable.idempotence": acks == "all",
                    "linger.ms": 5,
                    "batch.size": 262144,
                    "client.id": "logpipe-bench-confluent",
                }
            )
            self.topic = topic

        def export(self, batch: Sequence[Any]) -> Any:
            failed: list[Any] = []
            left = [len(batch)]

            def delivered(err: Any, msg: Any, record: Any = None) -> None:
                left[0] -= 1
                if err is not None:
                    failed.append(record)

            produce, poll = self.producer.produce, self.producer.poll
            for record in batch:
                headers = [("id", record.id.encode())]
                if record.trace_id:
                    headers.insert(0, ("trace_id", record.trace_id.encode()))
                while True:
                    try:
                        produce(
                            self.topic,
                            record.payload,
                            headers=headers,
                            on_delivery=lambda err, msg, record=record: delivered(err, msg, record),
                        )
                        break
                    except BufferError:
                        poll(0.01)
            deadline = time.monotonic() + 30
            while left[0] > 0 and time.monotonic() < deadline:
                poll(0.05)
            if left[0] > 0:
                return package.ExportResult.FAILURE
            if failed:
                return package.PartialFailure(failed)
            return package.ExportResult.SUCCESS

        def shutdown(self, timeout: float = 10.0) -> None:
            self.producer.flush(timeout)

        def describe(self) -> str:
            return f"confluent-kafka {bootstrap} topic {self.topic}"

    return ConfluentExporter()
