"""The ``elasticsearch`` exporter: records straight into daily indices, no Kafka in between.

Each batch becomes bulk ``create`` requests with ``_id`` = the record's ``Id``
(see `logpipe.elasticsearch.bulk_create`), so a batch retried after a timeout,
or replayed later from the spool, never duplicates a document.

What happens to each record of a batch:

* created, or already there (409): delivered;
* refused for good (400 mapping conflict, bad date ...): appended to the
  dead-letter file with the reason, and counted as delivered, because sending
  it again would be refused again;
* 429/5xx after the retry budget, or no answer at all (node down): handed back
  to the dispatcher, which gives it to the fallback exporter (the spool by
  default), whole batch or just those records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import elasticsearch as es
from ..config import setting
from ..record import Record
from ..report import Reporter
from .base import Exporter, ExportResult, PartialFailure

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

__all__ = ["DEFAULT_DEAD_LETTER", "ElasticsearchExporter", "ElasticsearchExporterOptions"]

#: Where documents Elasticsearch refuses for good are kept.
DEFAULT_DEAD_LETTER = Path("logs") / "dead-letter.jsonl"


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
        self._client: Elasticsearch | None = None
        self._template_ready = not self.options.install_template
        #: Tells a human on stderr, at most every 10 s.
        self._report = Reporter("elasticsearch: ")
        #: Counters since start, for tests and ``logpipe demo``.
        self.created = self.duplicates = self.dead_lettered = 0
        self.last_error: str | None = None

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        client = self._ready()
        if client is None:
            return ExportResult.FAILURE
        o = self.options
        docs = [es.BulkDoc(es.index_name(o.index_prefix, r.ts), r.id, r.payload) for r in batch]
        outcome = es.bulk_create(client, docs, o)
        self.created += outcome.created
        self.duplicates += outcome.duplicates
        failed = [batch[item.position] for item in outcome.retry]
        rejected = outcome.rejected
        if rejected:
            entries = [es.dead_letter_entry(item, batch[item.position].payload) for item in rejected]
            try:
                es.append_json_lines(Path(o.dead_letter), entries)
                self.dead_lettered += len(rejected)
            except OSError as exc:
                self._report(
                    f"cannot write the dead-letter file {o.dead_letter} (LOGPIPE_ELASTICSEARCH_DEAD_LETTER): {exc}"
                )
                failed.extend(batch[item.position] for item in rejected)
            else:
                self._report(
                    f"{len(rejected)} record(s) refused by Elasticsearch, kept in {o.dead_letter}: {rejected[0].reason}"
                )
        if outcome.error:
            self.last_error = outcome.error
            self._report(f"{len(failed)} record(s) not delivered after {o.max_retries} retries: {outcome.error}")
        if not failed:
            return ExportResult.SUCCESS
        if len(failed) == len(batch):
            return ExportResult.FAILURE
        return PartialFailure(failed)

    def shutdown(self, timeout: float = 10.0) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def after_fork(self) -> None:
        # The parent's connection pool must not be shared; build a new one lazily.
        self._client = None

    def describe(self) -> str:
        return f"elasticsearch {','.join(self.options.hosts)} index {self.options.index_prefix}-YYYY.MM.dd"

    # -- internals ------------------------------------------------------------

    def _ready(self) -> Elasticsearch | None:
        """The client, with the index template in place; None when Elasticsearch is unreachable.

        The template is put before the first document: without it the first
        daily index would be created with dynamic mappings. A template
        Elasticsearch refuses raises `ConfigError` (the dispatcher reports it).
        """
        from elasticsearch import ApiError, TransportError

        o = self.options
        if self._client is None:
            self._client = es.make_client(o)
        for attempt in range(o.max_retries + 1):
            if self._template_ready:
                break
            if attempt:
                time.sleep(min(o.max_backoff, o.backoff * 2 ** (attempt - 1)))
            try:
                es.install_template(self._client, o)
                self._template_ready = True
            except (ApiError, TransportError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
        if not self._template_ready:
            self._report(f"cannot reach Elasticsearch to install the index template: {self.last_error}")
            return None
        return self._client
