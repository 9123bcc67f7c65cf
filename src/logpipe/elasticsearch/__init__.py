"""Elasticsearch plumbing shared by the direct exporter, ``logpipe ship`` and ``logpipe search``.

Three parts, so that every path into Elasticsearch behaves alike:

* `options`: `ElasticsearchOptions` (``LOGPIPE_ELASTICSEARCH_*``), their
  checks, `make_client` (hosts, API key or basic auth, TLS, timeout);
* `template`: daily index names ``<prefix>-YYYY.MM.dd`` by event time (UTC),
  the composable index template and its installation;
* `bulk`: the one bulk path (pre-serialised ``create`` actions with ``_id`` =
  the record's ``Id``, filtered answers, retries by `logpipe.backoff.Backoff`).

Every public name is importable from here (``from logpipe import
elasticsearch as es; es.make_client(...)``). The client library is imported
lazily: importing this package costs nothing when Elasticsearch is not used.
"""

from __future__ import annotations

from .bulk import (
    BULK_FILTER,
    MAX_ID_BYTES,
    RETRY_STATUS,
    BulkIndexer,
    BulkReply,
    ClientIndexer,
    Delivery,
    ItemResult,
    Unreachable,
    create_line,
    deliver,
    error_text,
    failure,
    send_bulk,
    split,
)
from .options import (
    ENV_PREFIX,
    ElasticsearchOptions,
    FieldMapping,
    backoff,
    check_options,
    make_client,
)
from .options import (
    _check_hosts as _check_hosts,
)
from .options import (
    _check_prefix as _check_prefix,
)
from .template import TIME_FORMAT, index_name, index_pattern, index_template, install_template, template_name

#: The name ``logpipe search`` and older callers use.
_error_text = error_text

__all__ = [
    "BULK_FILTER",
    "ENV_PREFIX",
    "MAX_ID_BYTES",
    "RETRY_STATUS",
    "TIME_FORMAT",
    "BulkIndexer",
    "BulkReply",
    "ClientIndexer",
    "Delivery",
    "ElasticsearchOptions",
    "FieldMapping",
    "ItemResult",
    "Unreachable",
    "backoff",
    "check_options",
    "create_line",
    "deliver",
    "error_text",
    "failure",
    "index_name",
    "index_pattern",
    "index_template",
    "install_template",
    "make_client",
    "send_bulk",
    "split",
    "template_name",
]
