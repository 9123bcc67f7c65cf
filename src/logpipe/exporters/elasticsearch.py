"""The ``elasticsearch`` exporter: records straight into daily indices, no Kafka in between.

Each batch becomes bulk ``create`` requests with ``_id`` = the record's ``Id``
(the one bulk path, `logpipe.elasticsearch.bulk.deliver`), so a batch retried
after a timeout, or replayed later from the spool, never duplicates a document.

What happens to each record of a batch:

* created, or already there (409): delivered;
* refused for good (400 mapping conflict, bad date ...): written to the
  dead-letter file (`logpipe.deadletter`, source ``{"exporter":
  "elasticsearch"}``) with the reason, and counted as delivered, because
  sending it again would be refused again;
* 429/5xx after the retry budget, or no answer at all (node down): handed back
  to the dispatcher, which gives it to the fallback exporter (the spool by
  default), whole batch or just those records.

Retries wait with a `logpipe.backoff.Backoff` that `shutdown` interrupts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import deadletter
from .. import elasticsearch as es
from ..config import setting
from ..record import Record
from ..report import Reporter
from .base import Exporter, ExportResult, PartialFailure

__all__ = ["DEFAULT_DEAD_LETTER", "ElasticsearchExporter", "ElasticsearchExporterOptions"]

#: Where documents Elasticsearch refuses for good are kept.
DEFAULT_DEAD_LETTER = Path("logs") / "dead-letter.jsonl"

#: The ``source`` of this exporter's dead letters.
SOURCE = {"exporter": "elasticsearch"}


@dataclass(frozen=True)
class ElasticsearchExporterOptions(es.ElasticsearchOptions):
    dead_letter: Path = setting(
        DEFAULT_DEAD_LETTER, "JSON Lines file for records Elasticsearch refuses for good (400s)."
    )


class ElasticsearchExporter(Exporter):
    """Bulk-creates records in ``<prefix>-YYYY.MM.dd`` indices."""

    Options = ElasticsearchExporterOptions
    options: ElasticsearchExporterOptions
    default_fallback = "spool"

    def __init__(self, options: ElasticsearchExporterOptions | None = None) -> None:
        super().__init__(options)
        es.check_options(self.options)
        self._indexer: es.BulkIndexer | None = None
        self._template_ready = not self.options.install_template
        #: Set by `shutdown`: ends a retry wait at once.
        self._closing = threading.Event()
        self._backoff = es.backoff(self.options, self._closing)
        self._dead_letters = deadletter.FileDeadLetters(self.options.dead_letter, "LOGPIPE_ELASTICSEARCH_DEAD_LETTER")
        #: Tells a human on stderr, at most every 10 s.
        self._report = Reporter("elasticsearch: ")
        #: Counters since start, for tests and ``logpipe demo``.
        self.created = self.duplicates = self.dead_lettered = 0
        self.last_error: str | None = None

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        indexer = self._ready()
        if indexer is None:
            return ExportResult.FAILURE
        o = self.options
        indices = [es.index_name(o.index_prefix, r.ts) for r in batch]
        lines = [es.create_line(index, r.id, r.payload) for index, r in zip(indices, batch, strict=True)]
        outcome = es.deliver(
            indexer,
            lines,
            indices,
            chunk_size=o.chunk_size,
            max_bytes=o.max_chunk_bytes,
            retries=o.max_retries,
            backoff=self._backoff,
        )
        self.created += outcome.created
        self.duplicates += outcome.duplicates
        failed = [batch[item.position] for item in outcome.undelivered]
        if outcome.rejected and not self._dead_letter(batch, outcome.rejected):
            failed.extend(batch[item.position] for item in outcome.rejected)
        # Per-item 429s (a full write queue) come in a 200 answer, with no request-level error.
        error = outcome.error or (outcome.undelivered[0].reason if outcome.undelivered else None)
        if error:
            self.last_error = error
            self._report(f"{len(failed)} record(s) not delivered after {o.max_retries} retries: {error}")
        if not failed:
            return ExportResult.SUCCESS
        if len(failed) == len(batch):
            return ExportResult.FAILURE
        return PartialFailure(failed)

    def shutdown(self, timeout: float = 10.0) -> None:
        self._closing.set()
        if self._indexer is not None:
            self._indexer.close()
            self._indexer = None

    def after_fork(self) -> None:
        # The parent's connection pool must not be shared; build a new one lazily.
        self._indexer = None

    def describe(self) -> str:
        return f"elasticsearch {','.join(self.options.hosts)} index {self.options.index_prefix}-YYYY.MM.dd"

    # -- internals ------------------------------------------------------------

    def _dead_letter(self, batch: Sequence[Record], rejected: Sequence[es.ItemResult]) -> bool:
        """Keep what Elasticsearch refused for good; False when the file cannot be written."""
        letters = [
            deadletter.DeadLetter(
                batch[item.position].payload,
                f"refused by Elasticsearch: {item.reason}",
                SOURCE,
                item.status,
                item.index,
            )
            for item in rejected
        ]
        try:
            self._dead_letters.write(letters)
        except OSError as exc:
            self._report(f"cannot keep {len(letters)} refused record(s): {exc}")
            return False
        self.dead_lettered += len(letters)
        self._report(
            f"{len(letters)} record(s) refused by Elasticsearch, kept in {self.options.dead_letter}: "
            f"{rejected[0].reason}"
        )
        return True

    def _ready(self) -> es.BulkIndexer | None:
        """The indexer, with the index template in place; None when Elasticsearch is unreachable.

        The template is put before the first document: without it the first
        daily index would be created with dynamic mappings. A template
        Elasticsearch refuses raises `ConfigError` (the dispatcher reports it).
        """
        o = self.options
        if self._indexer is None:
            self._indexer = es.ClientIndexer(o)
        for attempt in range(o.max_retries + 1):
            if self._template_ready or (attempt and not self._backoff.wait()):
                break
            try:
                self._indexer.install_template()
                self._template_ready = True
            except es.Unreachable as exc:
                self.last_error = str(exc)
        if not self._template_ready:
            self._report(f"cannot reach Elasticsearch to install the index template: {self.last_error}")
            return None
        self._backoff.reset()
        return self._indexer
