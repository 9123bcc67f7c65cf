"""Where documents go and how those indices look: daily index names, the index template, its installation.

Daily indices ``<prefix>-YYYY.MM.dd`` by the record's *event* time in UTC
(the seed's Logstash ``msproject_log-%{+YYYY.MM.dd}`` layout), each created
from one composable template (see ``docs/elasticsearch.md`` for why each
field is mapped so).
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..exceptions import ConfigError
from .bulk import error_text
from .options import ENV_PREFIX, ElasticsearchOptions, FieldMapping

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

__all__ = ["TIME_FORMAT", "index_name", "index_pattern", "index_template", "install_template", "template_name"]

#: ISO 8601 with or without offset (logpipe's default), the seed's layout
#: (read as UTC: it carries no offset), and epoch milliseconds.
TIME_FORMAT = "strict_date_optional_time||yyyy-MM-dd HH:mm:ss||epoch_millis"

_KEYWORDS = ("Type", "Action", "FuncName", "Service", "TraceId", "SpanId", "Host", "Id")


def index_name(prefix: str, ts: float) -> str:
    """``logpipe-2026.11.25``: the daily index of an event at epoch *ts* (UTC day).

    Cached per day: formatting a date costs more than the rest of a record's
    way through the shipper, and a stream of logs spans few days.
    """
    return _daily_index(prefix, int(ts // 86400))


@functools.lru_cache(maxsize=256)
def _daily_index(prefix: str, day: int) -> str:
    return f"{prefix}-{datetime.fromtimestamp(day * 86400, timezone.utc):%Y.%m.%d}"


def index_pattern(prefix: str) -> str:
    """The pattern matching every daily index of *prefix*."""
    return f"{prefix}-*"


def template_name(prefix: str) -> str:
    return f"logpipe-{prefix}"


def _field_mapping(kind: FieldMapping) -> dict[str, Any]:
    if kind == "flattened":
        # One field for the whole object: its leaves are indexed as keywords, so
        # any key a service invents costs no mapping entry and two services
        # disagreeing on a key's type cannot reject each other's documents.
        # Leaves longer than 4096 chars stay in _source but are not indexed
        # (Lucene refuses terms over 32 KiB, which would fail the document).
        return {"type": "flattened", "ignore_above": 4096}
    if kind == "dynamic":
        return {"type": "object", "dynamic": True}
    return {"type": "object", "enabled": False}


def index_template(options: ElasticsearchOptions) -> dict[str, Any]:
    """The body of the composable index template for ``<prefix>-*``.

    ``priority`` grows with the prefix length, so templates of overlapping
    prefixes (``app-*`` and ``app-eu-*``) never tie, which Elasticsearch refuses.
    """
    msg: dict[str, Any] = {
        "type": "text",
        "analyzer": options.analyzer,
        "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}},
    }
    if options.search_analyzer:
        msg["search_analyzer"] = options.search_analyzer
    properties: dict[str, Any] = {name: {"type": "keyword", "ignore_above": 1024} for name in _KEYWORDS}
    properties["Time"] = {"type": "date", "format": TIME_FORMAT}
    properties["Msg"] = msg
    properties["Field"] = _field_mapping(options.field_mapping)
    settings: dict[str, Any] = {
        "number_of_shards": options.shards,
        "number_of_replicas": options.replicas,
    }
    if options.ilm_policy:
        settings["index.lifecycle.name"] = options.ilm_policy
        # ILM ages the index from the day in its name (<prefix>-yyyy.MM.dd matches
        # ILM's "^.*-(\d{4}.\d{2}.\d{2})(-\d+)?$"), so a day backfilled late
        # is deleted on schedule rather than N days after it was created.
        settings["index.lifecycle.parse_origination_date"] = True
    return {
        "index_patterns": [index_pattern(options.index_prefix)],
        "priority": 200 + len(options.index_prefix),
        "template": {
            "settings": settings,
            "mappings": {
                # Keys outside the KafkaLog shape stay in _source, unindexed:
                # a foreign producer cannot grow the mapping.
                "dynamic": False,
                "properties": dict(sorted(properties.items())),
            },
        },
        "_meta": {"managed_by": "logpipe", "logpipe_version": __version__},
    }


def install_template(client: Elasticsearch, options: ElasticsearchOptions) -> None:
    """Create or replace the index template; raises `ConfigError` when Elasticsearch refuses it.

    Connection errors propagate as elasticsearch-py's ``ConnectionError``.
    """
    from elasticsearch import BadRequestError

    body = index_template(options)
    try:
        client.indices.put_index_template(name=template_name(options.index_prefix), **body)
    except BadRequestError as exc:
        hint = ""
        if options.analyzer != "standard" or options.search_analyzer:
            hint = (
                f" Is the analyzer {options.analyzer!r} installed on every node"
                f" ({ENV_PREFIX}ANALYZER / {ENV_PREFIX}SEARCH_ANALYZER)?"
            )
        raise ConfigError(
            f"Elasticsearch refused the index template {template_name(options.index_prefix)!r}: "
            f"{error_text(exc.body) or exc}.{hint}"
        ) from exc
