"""``logpipe tail``: follow log files and send each line to Kafka (Filebeat's role).

Each line of a followed file becomes one Kafka message through logpipe's own
`KafkaExporter`, so the ``LOGPIPE_KAFKA_*`` settings, the ``id``/``trace_id``
headers and the outage detection are the same as for records logged directly:
a KafkaLog line is sent byte for byte (`kafkalog_record`), another program's
JSON log line is mapped onto KafkaLog (`logpipe.formats`), any other line is
wrapped into a new KafkaLog record (`wrap_line`), never dropped; container
logs are unwrapped and multi-line events joined. Records built here get
deterministic ids (`records.file_ids`).

Delivery is at least once: the registry (`Registry`) keeps one offset per
file, keyed by device and inode, and only ever advances to the end of lines
whose records Kafka acknowledged. While Kafka is unreachable the file is the
buffer: nothing is spooled, the tailer retries what it has in hand.

The parts, named after Vector's file source (see docs/tail.md):

* `options` -- the settings (`TailOptions`, `load_options`);
* `paths` -- which files match the patterns now;
* `fingerprint` -- what makes a file the same file (device, inode, head CRC);
* `checkpoint` -- the registry on disk;
* `harvester` -- reading one file: blocks -> lines, partial and long lines, truncation;
* `container` -- CRI and Docker ``json-file`` framing;
* `multiline` -- which line continues a multi-line event (presets, a regex);
* `events` -- a file's lines -> events (container pieces and multi-line events joined);
* `records` -- an event -> the record sent for it, and its id;
* `files` -- the open set: opening, rotation, closing, registry entries;
* `server` -- the `Tailer` loop tying them to the exporter.

`Tailer` is the Python API (run it in a thread, call `Tailer.stop`), like
`logpipe.shipper.Shipper`; `logpipe.cli.tail` wraps it in a command.
"""

from __future__ import annotations

from .checkpoint import Registry, RegistryEntry
from .options import ENV_PREFIX, TailOptions, load_options
from .records import kafkalog_record, printable, wrap_line
from .server import Tailer
from .stats import TailStats

__all__ = [
    "ENV_PREFIX",
    "Registry",
    "RegistryEntry",
    "TailOptions",
    "TailStats",
    "Tailer",
    "kafkalog_record",
    "load_options",
    "printable",
    "wrap_line",
]
