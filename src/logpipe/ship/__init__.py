"""``logpipe ship``: Kafka -> Elasticsearch, at least once, without duplicate documents.

The parts, each small enough to test alone:

* `options`: `ShipOptions` (``LOGPIPE_SHIP_*``) and `load_options`;
* `consumer` (and `confluent`): the `Consumer` interface over kafka-python
  and confluent-kafka, configured through `logpipe.kafkaclient`;
* `batches`: the `Batch` (the commit unit) and `prepare`, which checks
  messages with `logpipe.ingress` and builds their bulk lines;
* `deadletters`: the dead-letter sinks (a file, or a Kafka topic);
* `shipper`: the `Shipper` loop (a `logpipe.runner.Runner`), which takes its
  consumer and bulk indexer as arguments.

`Shipper` is the Python API (run it in a thread, call `Shipper.stop`);
`logpipe.cli.ship` wraps it in a command with signals and a progress display.
"""

from __future__ import annotations

from .batches import Batch, prepare
from .consumer import (
    CLIENTS,
    CommitFailed,
    CommitRefused,
    Consumer,
    ConsumerFactory,
    ConsumerSettings,
    Message,
    TopicPartition,
)
from .deadletters import DeadLetterSink, FileSink, KafkaTopicSink, letter, open_sink
from .options import ENV_PREFIX, ShipOptions, load_options
from .shipper import Shipper
from .stats import ShipStats

__all__ = [
    "CLIENTS",
    "ENV_PREFIX",
    "Batch",
    "CommitFailed",
    "CommitRefused",
    "Consumer",
    "ConsumerFactory",
    "ConsumerSettings",
    "DeadLetterSink",
    "FileSink",
    "KafkaTopicSink",
    "Message",
    "ShipOptions",
    "ShipStats",
    "Shipper",
    "TopicPartition",
    "letter",
    "load_options",
    "open_sink",
    "prepare",
]
