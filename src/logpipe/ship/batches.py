"""A `Batch`: messages polled together, indexed in bulk requests, and committed together.

A batch is the shipper's commit unit in `logpipe.inflight.InFlight`: its
bulk requests are the flights, and its Kafka offsets are committed once it,
and every batch polled before it, is accounted for (each message created,
already there, or durably dead-lettered). `prepare` turns each message into
the document to index (`logpipe.ship.documents`: any JSON object, or text)
and that into a pre-serialised bulk line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timezone, tzinfo

from .. import elasticsearch as es
from .. import ingress
from ..deadletter import DeadLetter
from ..redact import Redactor
from .consumer import Message, TopicPartition
from .deadletters import letter
from .documents import document
from .options import ENV_PREFIX

__all__ = ["Batch", "prepare"]


@dataclass(eq=False)
class Batch:
    """Messages polled together and committed together, and what is still to do for them."""

    #: Messages polled (good or malformed); ``in_flight`` until the batch is accounted for.
    size: int
    #: Per partition, the last message polled: the commit goes one past it.
    ends: dict[TopicPartition, Message]
    #: The messages to index and, position by position, their bulk lines and indices.
    sources: list[Message] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    indices: list[str] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: Positions sent in a request whose reply has not been accounted for.
    waiting: set[int] = field(default_factory=set)
    #: Positions to send again (no answer, 429, 5xx), and why, for humans.
    retry: list[int] = field(default_factory=list)
    retry_reason: str = ""

    def chunks(self, positions: Sequence[int], chunk_size: int, max_bytes: int) -> list[list[int]]:
        """*positions* cut into bulk requests (``CHUNK_SIZE``, ``MAX_CHUNK_BYTES``)."""
        return es.split(positions, self.lines, chunk_size, max_bytes)

    def answered(self, chunk: Sequence[int], reply: es.BulkReply) -> list[es.ItemResult]:
        """Note the reply to the request of *chunk*; returns the items refused for good (positions into the batch).

        Items to send again join `retry`. Positions of a request that never
        replied stay in `waiting` until `unanswered` hands them to `retry`.
        """
        self.waiting.difference_update(chunk)
        refused = []
        for item in reply.failed:
            position = chunk[item.position]
            if item.retryable:
                self.retry.append(position)
                self.retry_reason = reply.error or item.reason
            else:
                refused.append(es.ItemResult(position, item.index, item.status, item.error))
        return refused

    def unanswered(self) -> None:
        """No request of this batch is out any more: what never got a reply is sent again."""
        if self.waiting:
            self.retry.extend(sorted(self.waiting))
            self.retry_reason = self.retry_reason or "no reply to a bulk request"
            self.waiting.clear()

    def take_retry(self) -> list[int]:
        """The positions to send again, in order; `retry` is empty afterwards."""
        positions, self.retry = sorted(self.retry), []
        return positions


def prepare(
    messages: Iterable[Message],
    ends: dict[TopicPartition, Message],
    prefix: str,
    limit: int,
    zone: tzinfo | None = timezone.utc,
    redactor: Redactor | None = None,
) -> Batch:
    """A batch of *messages* as bulk lines (`logpipe.ship.documents`); what is too large becomes a dead letter."""
    items = list(messages)
    batch = Batch(len(items), ends)
    for message in items:
        found = document(message, limit, zone, redactor)
        if isinstance(found, ingress.Invalid):
            batch.dead.append(letter(message, _why(found, limit)))
            continue
        try:
            index = es.index_name(prefix, found.ts)
        except (ValueError, OverflowError, OSError):
            batch.dead.append(letter(message, f"Time of {found.id!r} is out of range"))
            continue
        batch.sources.append(message)
        batch.indices.append(index)
        batch.lines.append(es.create_line(index, found.id, found.payload))
    return batch


def _why(invalid: ingress.Invalid, limit: int) -> str:
    """The reason a message is dead-lettered, naming the setting when it is the size limit."""
    if invalid.reason.endswith(f"over the limit of {limit}"):
        return f"message is {invalid.reason}: max_message_bytes ({ENV_PREFIX}MAX_MESSAGE_BYTES)"
    return invalid.reason
