"""Where ``logpipe ship`` keeps messages it cannot index: one sink interface, a file or a Kafka topic.

``LOGPIPE_SHIP_DEAD_LETTER`` chooses: ``file:PATH`` appends entries of the one
dead-letter schema (`logpipe.deadletter`, with source ``{"topic",
"partition", "offset"}``) through `logpipe.deadletter.FileDeadLetters`; a
topic template (``{topic}.dlq``) sends each message with its key, value and
headers unchanged plus the ``logpipe.dlq.*`` headers of
`logpipe.deadletter.kafka_headers`, through a producer whose connection comes
from `logpipe.kafkaclient` like every Kafka client of logpipe.

A sink's ``write`` returns only once the letters are stored (fsynced, or
acknowledged by every in-sync replica) and raises otherwise: the shipper
commits a batch's offsets only after its dead letters are stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .. import deadletter, kafkaclient
from ..deadletter import DeadLetter
from .consumer import Message
from .options import ENV_PREFIX, ShipOptions, kafka_connection

if TYPE_CHECKING:
    from kafka import KafkaProducer

__all__ = ["DeadLetterSink", "FileSink", "KafkaTopicSink", "letter", "open_sink"]

#: Bytes a dead letter may carry over the largest message consumed (headers, framing).
_ENVELOPE = 64 * 1024


class DeadLetterSink(Protocol):
    """Stores dead letters durably; ``write`` raises when it could not (the shipper retries)."""

    def write(self, letters: Sequence[DeadLetter]) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def letter(message: Message, reason: str, status: int | None = None, index: str | None = None) -> DeadLetter:
    """The dead letter of a consumed *message*: its bytes, key and headers, and where it came from."""
    return DeadLetter(
        value=message.value,
        reason=reason,
        source={"topic": message.topic, "partition": message.partition, "offset": message.offset},
        status=status,
        index=index,
        key=message.key,
        headers=tuple(message.headers or ()),
    )


class FileSink(deadletter.FileDeadLetters):
    """JSON Lines in the one dead-letter schema (``file:PATH``)."""

    def close(self) -> None:
        """Nothing is held open between writes."""


class KafkaTopicSink:
    """Each letter to the topic *template* names (``{topic}`` = its source topic), unchanged plus headers."""

    def __init__(self, template: str, connection: kafkaclient.Connection, max_message_bytes: int, timeout: float):
        self.template = template
        self._connection = connection
        self._max_bytes = max(max_message_bytes, 1024 * 1024) + _ENVELOPE
        self._timeout = timeout
        self._producer: KafkaProducer | None = None

    def write(self, letters: Sequence[DeadLetter]) -> None:
        """Send every letter and wait for the acknowledgements; raises the first send error."""
        producer = self._open()
        futures = []
        for item in letters:
            headers = [*item.headers, *deadletter.kafka_headers(item)]
            topic = self.template.format(topic=item.source["topic"])
            futures.append(producer.send(topic, value=item.value, key=item.key, headers=headers))
        producer.flush(timeout=self._timeout)
        for future in futures:
            future.get(timeout=0)  # raises the send error, if any

    def describe(self) -> str:
        return self.template

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5.0)
            self._producer = None

    def _open(self) -> KafkaProducer:
        if self._producer is None:
            from kafka import KafkaProducer

            config = kafkaclient.kafka_python(
                self._connection,
                acks="all",
                linger_ms=5,
                # a dead letter can be as large as the largest message consumed
                max_request_size=self._max_bytes,
            )
            self._producer = KafkaProducer(**config)
        return self._producer


def open_sink(options: ShipOptions, timeout: float) -> DeadLetterSink:
    """The sink ``LOGPIPE_SHIP_DEAD_LETTER`` names; *timeout* bounds one Kafka write (seconds)."""
    variable = f"{ENV_PREFIX}DEAD_LETTER"
    if options.dead_letter.startswith("file:"):
        return FileSink(options.dead_letter[5:], variable)
    connection = kafka_connection(options, "logpipe-shipper-dlq")
    return KafkaTopicSink(options.dead_letter, connection, options.max_message_bytes, timeout)
