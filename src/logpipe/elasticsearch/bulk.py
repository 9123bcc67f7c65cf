"""The one bulk path into Elasticsearch: pre-serialised ``create`` actions, filtered answers, retries by `Backoff`.

Every document is a ``create`` with ``_id`` = the record's ``Id``, so a
retried or redelivered record never becomes a second document
(Elasticsearch answers 409 for it, which counts as delivered).

* `create_line` builds the two NDJSON lines of a document once, as bytes: the
  source goes as it came and only the ``_id`` is encoded per document;
* `split` cuts documents into requests by ``chunk_size`` and
  ``max_chunk_bytes``;
* `send_bulk` sends one request with no retries and never raises for I/O;
  the answer is filtered to each item's status and error (`BULK_FILTER`);
* a `BulkIndexer` is what a user holds (`ClientIndexer` over
  elasticsearch-py, or a test's fake): ``send`` and ``install_template``;
* `deliver` sends documents in requests and retries those answered 429/5xx
  or not answered at all, waiting with a `Backoff` (interruptible), for the
  direct exporter; ``logpipe ship`` pipelines `BulkIndexer.send` itself.

This replaced a second path over elasticsearch-py's ``streaming_bulk``: the
pre-built lines are cheaper (see ``bench/ship_throughput.py``), and the
helper's retry sleeps could not be interrupted by a shutdown.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson

from ..backoff import Backoff
from .options import ElasticsearchOptions, make_client

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

__all__ = [
    "BULK_FILTER",
    "MAX_ID_BYTES",
    "RETRY_STATUS",
    "BulkIndexer",
    "BulkReply",
    "ClientIndexer",
    "Delivery",
    "ItemResult",
    "Unreachable",
    "create_line",
    "deliver",
    "error_text",
    "send_bulk",
    "split",
]

#: Item and request statuses worth sending again: overload (429) and server errors
#: (503 ``unavailable_shards_exception`` right after a restart is the common one).
RETRY_STATUS = frozenset({429, *range(500, 600)})

#: Longest ``_id`` Elasticsearch accepts, in UTF-8 bytes.
MAX_ID_BYTES = 512

#: What `send_bulk` asks the answer to hold: each item's status and error, nothing else.
BULK_FILTER = "errors,items.*.status,items.*.error"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one document of a request.

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
        return error_text(self.error) or (f"status {self.status}" if self.status else "no answer")


@dataclass
class BulkReply:
    """What one bulk request came back with."""

    created: int = 0
    duplicates: int = 0
    #: Items neither created nor already there; ``position`` is the item's place in the request.
    failed: list[ItemResult] = field(default_factory=list)
    #: The request-level error (connection, HTTP status of the whole request), for humans.
    error: str | None = None
    seconds: float = 0.0
    #: The HTTP status of a request refused as a whole (401, 413, 503 ...); None otherwise.
    status: int | None = None

    @classmethod
    def unanswered(cls, indices: Sequence[str], error: str, status: int | None = None) -> BulkReply:
        """A reply in which no document was answered (every item retryable)."""
        return cls(
            failed=[ItemResult(p, index, None, error) for p, index in enumerate(indices)], error=error, status=status
        )

    @property
    def retry(self) -> list[ItemResult]:
        return [i for i in self.failed if i.retryable]

    @property
    def rejected(self) -> list[ItemResult]:
        return [i for i in self.failed if i.rejected]


class Unreachable(Exception):
    """Elasticsearch did not answer, or answered with an error worth retrying later."""


class BulkIndexer(Protocol):
    """What users of the bulk path need of Elasticsearch (a fake in tests)."""

    def send(self, lines: Sequence[bytes], indices: Sequence[str]) -> BulkReply:
        """One request of `create_line` actions; never raises for I/O (thread-safe)."""
        ...

    def install_template(self) -> None:
        """Put the index template; `Unreachable` to retry later, `ConfigError` when refused for good."""
        ...

    def close(self) -> None: ...


class ClientIndexer:
    """`BulkIndexer` over an elasticsearch-py client built from *options* (or given)."""

    def __init__(self, options: ElasticsearchOptions, client: Elasticsearch | None = None) -> None:
        self.options = options
        self.client = client if client is not None else make_client(options)

    def send(self, lines: Sequence[bytes], indices: Sequence[str]) -> BulkReply:
        return send_bulk(self.client, lines, indices)

    def install_template(self) -> None:
        from elasticsearch import ApiError, TransportError

        from .template import install_template

        try:
            install_template(self.client, self.options)
        except (ApiError, TransportError) as exc:
            raise Unreachable(failure(exc)) from exc

    def close(self) -> None:
        self.client.close()


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

    A single line larger than *max_bytes* still goes, alone.
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
    try:
        # The client sends bytes as they are (its NDJSON serialiser passes them through).
        answer = client.bulk(operations=cast(Any, b"".join(lines)), filter_path=BULK_FILTER).body
    except ApiError as exc:
        reply = BulkReply.unanswered(indices, failure(exc), exc.status_code)
    except TransportError as exc:
        reply = BulkReply.unanswered(indices, failure(exc))
    else:
        reply = _read_answer(answer, indices)
    reply.seconds = time.monotonic() - started
    return reply


def _read_answer(answer: Any, indices: Sequence[str]) -> BulkReply:
    found = answer.get("items") if isinstance(answer, Mapping) else None
    if not isinstance(found, list) or len(found) != len(indices):
        got = len(found) if isinstance(found, list) else "no"
        return BulkReply.unanswered(indices, f"bulk answer has {got} items for {len(indices)} documents")
    reply = BulkReply()
    if not answer.get("errors"):
        reply.created = len(indices)  # every item 2xx: nothing to look at one by one
        return reply
    for position, item in enumerate(found):
        (result,) = item.values()
        status = result.get("status")
        if isinstance(status, int) and 200 <= status < 300:
            reply.created += 1
        elif status == 409:
            reply.duplicates += 1
        else:
            status = status if isinstance(status, int) else None
            reply.failed.append(ItemResult(position, indices[position], status, result.get("error")))
    return reply


@dataclass
class Delivery:
    """What `deliver` achieved; positions are into the documents it was given."""

    created: int = 0
    duplicates: int = 0
    #: Refused for good (4xx): for the dead-letter file.
    rejected: list[ItemResult] = field(default_factory=list)
    #: Still not delivered when the retries ran out (or a stop came): for the fallback.
    undelivered: list[ItemResult] = field(default_factory=list)
    #: The last request-level error, for humans.
    error: str | None = None


def deliver(
    indexer: BulkIndexer,
    lines: Sequence[bytes],
    indices: Sequence[str],
    *,
    chunk_size: int,
    max_bytes: int,
    retries: int,
    backoff: Backoff,
) -> Delivery:
    """Send *lines* in requests; retry 429/5xx and unanswered ones up to *retries* times, waiting with *backoff*.

    A request refused as a whole with a status that sending again cannot
    change (401, 403, 413 ...) is not retried. The wait ends early when the
    backoff's stop event is set; what is left is then `Delivery.undelivered`.
    """
    result = Delivery()
    pending = list(range(len(lines)))
    for attempt in range(retries + 1):
        if attempt and not backoff.wait():
            break
        again: list[ItemResult] = []
        hopeless = False
        for chunk in split(pending, lines, chunk_size, max_bytes):
            reply = indexer.send([lines[p] for p in chunk], [indices[p] for p in chunk])
            result.created += reply.created
            result.duplicates += reply.duplicates
            result.error = reply.error or result.error
            hopeless |= reply.status is not None and reply.status not in RETRY_STATUS
            for item in reply.failed:
                moved = replace(item, position=chunk[item.position])
                (again if item.retryable else result.rejected).append(moved)
        pending = [item.position for item in again]
        result.undelivered = again
        if not pending or hopeless:
            break
    if not result.undelivered:
        backoff.reset()
        result.error = None
    return result


def failure(exc: Exception, prefix: str = "LOGPIPE_ELASTICSEARCH_") -> str:
    """A request that failed, in words that name the setting to fix (and never a credential).

    401/403: the credentials; a TLS verification failure: the CA file (or a
    node whose certificate names another host); anything else: the status
    and Elasticsearch's own reason, or the transport error.
    """
    from elasticsearch import ApiError

    if isinstance(exc, ApiError):
        status = exc.status_code
        if status in (401, 403):
            what = "authentication failed" if status == 401 else "not allowed"
            return (
                f"HTTP {status}: {what}: check {prefix}USERNAME / {prefix}PASSWORD or {prefix}API_KEY "
                f"({error_text(exc.body) or exc})"
            )
        return f"HTTP {status}: {error_text(exc.body) or exc}"
    text = f"{type(exc).__name__}: {exc}"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return f"TLS: the node's certificate is not trusted: check {prefix}CA_CERTS ({text})"
    if "hostname" in text.lower() and "match" in text.lower():
        return f"TLS: the node's certificate is for another host: check {prefix}HOSTS ({text})"
    return text


def error_text(error: Any) -> str:
    """``type: reason (caused by: type: reason)`` from an Elasticsearch error object."""
    if isinstance(error, Mapping) and isinstance(error.get("error"), Mapping):
        error = error["error"]
    if isinstance(error, Mapping):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
        cause = error.get("caused_by")
        if isinstance(cause, Mapping):
            text += f" (caused by {error_text(cause)})"
        return text
    return "" if error is None else str(error)
