"""Elasticsearch plumbing shared by the direct exporter, ``logpipe ship`` and ``logpipe search``.

Four things live here, so that every path into Elasticsearch behaves alike:

* `ElasticsearchOptions` and `make_client`: hosts, API key or basic auth, TLS
  with a CA file, request timeout (``LOGPIPE_ELASTICSEARCH_*``);
* `index_name`: daily indices ``<prefix>-YYYY.MM.dd`` by the record's *event*
  time in UTC (the seed's Logstash ``msproject_log-%{+YYYY.MM.dd}`` layout);
* `index_template`: the composable template every ``<prefix>-*`` index is
  created from (see ``docs/elasticsearch.md`` for why each field is mapped so);
* `bulk_create`: ``create`` actions with ``_id`` = the record's ``Id``, so a
  retried or redelivered record never becomes a second document (Elasticsearch
  answers 409 for it, which counts as delivered), split by count and bytes
  and retried with backoff by elasticsearch-py's ``streaming_bulk``;
  `create_line`, `split` and `send_bulk` are the same ``create`` actions
  pre-serialised and sent one request at a time, for ``logpipe ship``, which
  pipelines requests and retries itself.

The client library is imported lazily: importing this module costs nothing
when Elasticsearch is not used.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

import orjson

from . import __version__, durable
from .config import at_least, setting
from .exceptions import ConfigError

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

__all__ = [
    "ENV_PREFIX",
    "RETRY_STATUS",
    "BulkDoc",
    "BulkOutcome",
    "BulkReply",
    "ElasticsearchOptions",
    "FieldMapping",
    "ItemResult",
    "append_json_lines",
    "bulk_create",
    "check_options",
    "create_line",
    "dead_letter_entry",
    "index_name",
    "index_pattern",
    "index_template",
    "install_template",
    "make_client",
    "send_bulk",
    "split",
    "template_name",
]

#: Where `ElasticsearchOptions` are read from.
ENV_PREFIX = "LOGPIPE_ELASTICSEARCH_"

#: How the free-form ``Field`` object is mapped; see `index_template`.
FieldMapping = Literal["flattened", "dynamic", "object-disabled"]

#: Item and request statuses worth sending again: overload (429) and server errors
#: (503 ``unavailable_shards_exception`` right after a restart is the common one).
RETRY_STATUS = frozenset({429, *range(500, 600)})

#: Longest ``_id`` Elasticsearch accepts, in UTF-8 bytes.
MAX_ID_BYTES = 512

_BAD_PREFIX_CHARS = set('\\/*?"<>| ,#:')


def _check_prefix(prefix: str) -> str | None:
    if not prefix:
        return "must not be empty"
    if prefix != prefix.lower():
        return "index names must be lower case"
    if prefix[0] in "-_+" or prefix in (".", ".."):
        return "must not start with -, _ or + (nor be . or ..)"
    bad = sorted(_BAD_PREFIX_CHARS & set(prefix))
    if bad:
        return f"must not contain {' '.join(repr(c) for c in bad)}"
    if len(prefix.encode()) > 200:
        return "is too long (index names are limited to 255 bytes)"
    return None


def _check_hosts(hosts: tuple[str, ...]) -> str | None:
    if not hosts:
        return "needs at least one URL, e.g. http://127.0.0.1:9200"
    for host in hosts:
        if "://" not in host:
            return f"{host!r} needs a scheme, e.g. http://{host} or https://{host}"
        try:
            url = urlsplit(host)
            port = url.port
        except ValueError as exc:
            return f"{host!r} is not a URL ({exc})"
        if url.scheme not in ("http", "https") or not url.hostname:
            return f"{host!r}: expected http://HOST:PORT or https://HOST[:PORT]"
        if port is None and url.scheme == "http":
            return f"{host!r} needs a port, e.g. {host.rstrip('/')}:9200"
    return None


@dataclass(frozen=True)
class ElasticsearchOptions:
    """How to reach Elasticsearch and how logpipe's indices look (``LOGPIPE_ELASTICSEARCH_*``)."""

    hosts: tuple[str, ...] = setting(
        ("http://127.0.0.1:9200",),
        "Node URLs, comma list (scheme required: http:// or https://).",
        check=_check_hosts,
    )
    index_prefix: str = setting(
        "logpipe", "Daily indices are <prefix>-YYYY.MM.dd (event time, UTC).", check=_check_prefix
    )
    api_key: str | None = setting(None, "API key (the base64 'id:api_key' form); wins over username.")
    username: str | None = setting(None, "Basic auth user (needs PASSWORD).")
    password: str | None = setting(None, "Basic auth password.")
    ca_certs: Path | None = setting(None, "CA bundle (PEM) to verify https:// nodes with.")
    verify_certs: bool = setting(True, "Verify TLS certificates (false only for throwaway clusters).")
    timeout: float = setting(10.0, "Seconds one HTTP request may take.", check=at_least(0.1))
    chunk_size: int = setting(500, "Most documents in one bulk request.", check=at_least(1))
    max_chunk_bytes: int = setting(
        10 * 1024 * 1024,
        "Most bytes in one bulk request (keep well under http.max_content_length).",
        check=at_least(1024),
    )
    max_retries: int = setting(
        3,
        "Retries of a bulk request or item that failed with 429/5xx or a connection error.",
        check=at_least(0),
    )
    backoff: float = setting(0.5, "Seconds before the first retry; doubles each retry.", check=at_least(0))
    max_backoff: float = setting(30.0, "Longest wait between two retries, in seconds.", check=at_least(0))
    analyzer: str = setting(
        "standard", "Analyzer of Msg: standard, smartcn (Chinese), ik_smart/ik_max_word (IK plugin) ..."
    )
    search_analyzer: str | None = setting(None, "Search-time analyzer of Msg (default: the analyzer).")
    field_mapping: FieldMapping = setting(
        "flattened", "How Field is mapped: flattened, dynamic (object) or object-disabled (not indexed)."
    )
    replicas: int = setting(1, "number_of_replicas of new daily indices (0 on a one-node cluster).", check=at_least(0))
    shards: int = setting(1, "number_of_shards of new daily indices.", check=at_least(1))
    ilm_policy: str | None = setting(
        None, "ILM policy new daily indices follow (index.lifecycle.name); create the policy first."
    )
    install_template: bool = setting(True, "Create/update the index template <prefix>-* before the first write.")


def check_options(options: ElasticsearchOptions, prefix: str = ENV_PREFIX) -> None:
    """Raise `ConfigError` for combinations no single setting's check can see."""
    if options.username and options.password is None:
        raise ConfigError(f"{prefix}USERNAME is set but {prefix}PASSWORD is not")
    if options.password is not None and not options.username:
        raise ConfigError(f"{prefix}PASSWORD is set but {prefix}USERNAME is not")
    if options.ca_certs is not None and not Path(options.ca_certs).is_file():
        raise ConfigError(f"{prefix}CA_CERTS={str(options.ca_certs)!r}: no such file")
    if options.max_backoff < options.backoff:
        raise ConfigError(f"{prefix}MAX_BACKOFF must be at least {prefix}BACKOFF ({options.backoff})")


def make_client(options: ElasticsearchOptions) -> Elasticsearch:
    """An `Elasticsearch` client for *options*.

    The transport's own retries are immediate (no backoff), so they are used
    only to fail over to another node (``max_retries = len(hosts) - 1``) and
    never for status codes; waiting and retrying is `bulk_create`'s job.
    """
    from elasticsearch import Elasticsearch

    kwargs: dict[str, Any] = {
        "request_timeout": options.timeout,
        "max_retries": max(len(options.hosts) - 1, 0),
        "retry_on_status": (),
        "retry_on_timeout": len(options.hosts) > 1,
    }
    if options.api_key:
        kwargs["api_key"] = options.api_key
    elif options.username:
        kwargs["basic_auth"] = (options.username, options.password or "")
    if any(h.lower().startswith("https://") for h in options.hosts):
        if options.ca_certs is not None:
            kwargs["ca_certs"] = str(options.ca_certs)
        if not options.verify_certs:
            kwargs["verify_certs"] = False
            kwargs["ssl_show_warn"] = False
    return Elasticsearch(list(options.hosts), **kwargs)


# -- indices and template ---------------------------------------------------------


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


#: ISO 8601 with or without offset (logpipe's default), the seed's layout
#: (read as UTC: it carries no offset), and epoch milliseconds.
TIME_FORMAT = "strict_date_optional_time||yyyy-MM-dd HH:mm:ss||epoch_millis"

_KEYWORDS = ("Type", "Action", "FuncName", "Service", "TraceId", "SpanId", "Host", "Id")


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
            f"{_error_text(exc.body) or exc}.{hint}"
        ) from exc


# -- bulk ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkDoc:
    """One document to create: its index, its ``_id`` and its JSON source (sent as is)."""

    index: str
    id: str
    source: bytes


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one `BulkDoc`.

    ``status`` is the item's HTTP status, or None when no answer came back
    (connection error, or the whole request was refused).
    """

    position: int
    index: str
    status: int | None
    error: Any = None

    @property
    def created(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def duplicate(self) -> bool:
        """Already there: a 409 on ``create`` with our ``_id``."""
        return self.status == 409

    @property
    def delivered(self) -> bool:
        return self.created or self.duplicate

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRY_STATUS

    @property
    def rejected(self) -> bool:
        """Refused for good (400 mapping conflict, ...): sending again cannot help."""
        return not self.delivered and not self.retryable

    @property
    def reason(self) -> str:
        return _error_text(self.error) or (f"status {self.status}" if self.status else "no answer")


@dataclass
class BulkOutcome:
    """Per-document results of `bulk_create`, in input order."""

    items: list[ItemResult]
    #: The last request-level error (connection, auth ...), for humans.
    error: str | None = None
    seconds: float = 0.0

    @property
    def created(self) -> int:
        return sum(1 for i in self.items if i.created)

    @property
    def duplicates(self) -> int:
        return sum(1 for i in self.items if i.duplicate)

    @property
    def rejected(self) -> list[ItemResult]:
        return [i for i in self.items if i.rejected]

    @property
    def retry(self) -> list[ItemResult]:
        return [i for i in self.items if i.retryable and not i.delivered]

    @property
    def complete(self) -> bool:
        """Nothing is left to send again (delivered or rejected for good)."""
        return not self.retry


def bulk_create(
    client: Elasticsearch,
    docs: Sequence[BulkDoc],
    options: ElasticsearchOptions,
    *,
    wait: Callable[[float], object] = time.sleep,
    refresh: bool | str | None = None,
) -> BulkOutcome:
    """Create *docs* with ``_op_type: create`` and their own ``_id``; never raises for I/O.

    elasticsearch-py's ``streaming_bulk`` splits by ``chunk_size`` and
    ``max_chunk_bytes`` and retries items and requests answered 429/5xx with
    exponential backoff. It does not retry connection errors (node down,
    reset, timeout); those are retried here, with the same budget and
    backoff, for the documents that have no answer yet. *wait* sleeps between
    those retries (the shipper passes one that keeps polling Kafka).
    """
    from elasticsearch import ApiError, TransportError
    from elasticsearch.helpers import streaming_bulk

    started = time.monotonic()
    results: dict[int, ItemResult] = {}
    error: str | None = None
    pending = list(range(len(docs)))
    extra: dict[str, Any] = {} if refresh is None else {"refresh": refresh}
    for attempt in range(options.max_retries + 1):
        if attempt:
            wait(min(options.max_backoff, options.backoff * 2 ** (attempt - 1)))
        by_id: dict[tuple[str, str], deque[int]] = defaultdict(deque)
        for position in pending:
            by_id[docs[position].index, docs[position].id].append(position)
        try:
            for _ok, item in streaming_bulk(
                client,
                cast(Any, _actions(docs, pending)),  # (header, raw source) pairs, see _as_is
                chunk_size=options.chunk_size,
                max_chunk_bytes=options.max_chunk_bytes,
                expand_action_callback=_as_is,
                raise_on_error=False,
                raise_on_exception=True,
                max_retries=options.max_retries,
                initial_backoff=options.backoff,
                max_backoff=options.max_backoff,
                retry_on_status=RETRY_STATUS,
                **extra,
            ):
                (info,) = item.values()
                queue = by_id.get((info.get("_index", ""), info.get("_id", "")))
                if not queue:  # _index may come back as the concrete name behind an alias
                    queue = next((q for (_, i), q in by_id.items() if i == info.get("_id") and q), None)
                if not queue:
                    continue
                position = queue.popleft()
                results[position] = ItemResult(
                    position, docs[position].index, int(info.get("status", 500)), info.get("error")
                )
        except ApiError as exc:
            error = f"HTTP {exc.status_code}: {_error_text(exc.body) or exc}"
            if exc.status_code not in RETRY_STATUS:
                break  # 401/403/413 ...: sending the same request again cannot help
        except TransportError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = None
        pending = [p for p in pending if p not in results]
        if not pending:
            break
    items = [results.get(p) or ItemResult(p, docs[p].index, None, error) for p in range(len(docs))]
    return BulkOutcome(items, error if any(i.status is None for i in items) else None, time.monotonic() - started)


@functools.lru_cache(maxsize=256)
def _create_head(index: str) -> bytes:
    return b'{"create":{"_index":' + orjson.dumps(index) + b',"_id":'


def create_line(index: str, doc_id: str, source: bytes) -> bytes:
    """The two NDJSON lines of one ``create`` action and its source, as `send_bulk` sends them.

    Built as bytes rather than as a dict for the client to serialise: the
    source is sent as it came, and only the ``_id`` is encoded per document.
    *source* must be one line (JSON allows a raw newline only as whitespace,
    so a caller can replace it with a space).
    """
    return _create_head(index) + orjson.dumps(doc_id) + b"}}\n" + source + b"\n"


def split(positions: Sequence[int], lines: Sequence[bytes], chunk_size: int, max_bytes: int) -> list[list[int]]:
    """Cut *positions* (into *lines*) into requests of at most *chunk_size* documents and *max_bytes* bytes.

    A single line larger than *max_bytes* still goes, alone, as streaming_bulk does.
    """
    chunks: list[list[int]] = []
    chunk: list[int] = []
    size = 0
    for position in positions:
        length = len(lines[position])
        if chunk and (len(chunk) >= chunk_size or size + length > max_bytes):
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(position)
        size += length
    if chunk:
        chunks.append(chunk)
    return chunks


#: What `send_bulk` asks the answer to hold: each item's status and error, nothing else.
BULK_FILTER = "errors,items.*.status,items.*.error"


@dataclass
class BulkReply:
    """What one `send_bulk` request came back with."""

    created: int = 0
    duplicates: int = 0
    #: Items neither created nor already there; ``position`` is the item's place in the request.
    failed: list[ItemResult] = field(default_factory=list)
    #: The request-level error (connection, HTTP status of the whole request), for humans.
    error: str | None = None
    seconds: float = 0.0

    @property
    def retry(self) -> list[ItemResult]:
        return [i for i in self.failed if i.retryable]

    @property
    def rejected(self) -> list[ItemResult]:
        return [i for i in self.failed if i.rejected]


def send_bulk(client: Elasticsearch, lines: Sequence[bytes], indices: Sequence[str]) -> BulkReply:
    """One bulk request of `create_line` actions, with no retries; never raises for I/O.

    Safe to call from several threads at once (the shipper keeps a few in
    flight); waiting and retrying is the caller's job. The answer is filtered
    (`BULK_FILTER`): the node serialises, and the client parses, a few bytes
    per document instead of its whole result. Items come back in request
    order, so the item at position *i* is the document ``lines[i]``, whose
    index is ``indices[i]``. When no usable answer came, every item has
    status None (retryable).
    """
    from elasticsearch import ApiError, TransportError

    started = time.monotonic()
    reply = BulkReply()
    answer: Any = None
    items: list[Any] = []
    try:
        # The client sends bytes as they are (its NDJSON serialiser passes them through).
        answer = client.bulk(operations=cast(Any, b"".join(lines)), filter_path=BULK_FILTER).body
        found = answer.get("items") if isinstance(answer, Mapping) else None
        if isinstance(found, list) and len(found) == len(lines):
            items = found
        else:
            got = len(found) if isinstance(found, list) else "no"
            reply.error = f"bulk answer has {got} items for {len(lines)} documents"
    except ApiError as exc:
        reply.error = f"HTTP {exc.status_code}: {_error_text(exc.body) or exc}"
    except TransportError as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    if reply.error is not None:
        reply.failed = [ItemResult(p, index, None, reply.error) for p, index in enumerate(indices)]
    elif not answer.get("errors"):
        reply.created = len(lines)  # every item 2xx: nothing to look at one by one
    else:
        for position, item in enumerate(items):
            (result,) = item.values()
            status = result.get("status")
            if isinstance(status, int) and 200 <= status < 300:
                reply.created += 1
            elif status == 409:
                reply.duplicates += 1
            else:
                status = status if isinstance(status, int) else None
                reply.failed.append(ItemResult(position, indices[position], status, result.get("error")))
    reply.seconds = time.monotonic() - started
    return reply


def _actions(docs: Sequence[BulkDoc], positions: Sequence[int]) -> Iterator[tuple[dict[str, Any], bytes]]:
    for position in positions:
        doc = docs[position]
        yield {"create": {"_index": doc.index, "_id": doc.id}}, doc.source


def _as_is(action: Any) -> Any:
    return action


def _error_text(error: Any) -> str:
    """``type: reason (caused by: type: reason)`` from an Elasticsearch error object."""
    if isinstance(error, Mapping) and isinstance(error.get("error"), Mapping):
        error = error["error"]
    if isinstance(error, Mapping):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
        cause = error.get("caused_by")
        if isinstance(cause, Mapping):
            text += f" (caused by {_error_text(cause)})"
        return text
    return "" if error is None else str(error)


# -- dead letters -------------------------------------------------------------------


def dead_letter_entry(item: ItemResult, payload: bytes, **extra: Any) -> dict[str, Any]:
    """The JSON object written for a document Elasticsearch refused for good."""
    try:
        record: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        record = payload.decode("utf-8", "backslashreplace")
    return {
        "reason": item.reason,
        "status": item.status,
        "index": item.index,
        **extra,
        "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "record": record,
    }


def append_json_lines(path: Path, entries: Sequence[Mapping[str, Any]]) -> None:
    """Append *entries* to *path* as JSON Lines in one write, then fsync.

    A dead letter is the only copy of what it holds, so it is on disk before
    anyone counts it as handled. Raises `OSError` when it cannot be written.
    """
    if not entries:
        return
    durable.append(
        path, b"".join(orjson.dumps(e, option=orjson.OPT_NON_STR_KEYS, default=str) + b"\n" for e in entries)
    )
