"""The producer side of the Kafka exporter, as one small interface with a backend per client library.

`KafkaExporter` owns what both clients share: the down-breaker, the
message's key and headers, the counters, what a batch's failures mean for
the batch and for the producer. A `Producer` only hands records to its
library and reports each record's fate as a `Flight`:

* `kafka_python_producer.KafkaPythonProducer`: kafka-python, pure Python
  (its sender thread holds the GIL, hence the child process under
  ``LOGPIPE_ISOLATION=auto``);
* `kafka_confluent_producer.ConfluentProducer`: confluent-kafka, librdkafka's
  C threads (it runs in the application's process).

`open_producer` imports only the library chosen (``LOGPIPE_KAFKA_CLIENT``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..record import Record
from .kafka_options import KafkaOptions, key_function, librdkafka_config, producer_config
from .kafka_outage import Failure

__all__ = ["Flight", "Producer", "client_config", "open_producer"]


class Flight(Protocol):
    """One batch handed to a producer, its acknowledgements not all known yet."""

    def done(self) -> bool:
        """Every record handed over has been acknowledged or has failed."""

    def await_progress(self, timeout: float) -> None:
        """Block until some record may have resolved, at most *timeout* seconds."""

    def outcome(self, give_up: bool) -> tuple[list[Record], list[Failure]]:
        """The records not acknowledged (batch order) and why; *give_up*: the pending ones fail now."""


class Producer(Protocol):
    """One client library's producer, used by one `KafkaExporter` (from several threads)."""

    def send(self, topic: str, batch: Sequence[Record]) -> Flight:
        """Hand *batch* over, in order; a record the library refuses at once fails alone or ends the hand-over."""

    def abort(self) -> None:
        """Fail every unacknowledged record now and close in the background (the broker is gone)."""

    def close(self, timeout: float) -> None:
        """Deliver what is outstanding within *timeout* seconds, then release the client."""

    def forget(self) -> None:
        """In a forked child: never use nor close this producer (its threads live in the parent)."""


def client_config(client: str, options: KafkaOptions) -> dict[str, Any]:
    """The configuration of *client*'s producer for *options*; `ConfigError` for what it would refuse later."""
    return librdkafka_config(options) if client == "confluent-kafka" else producer_config(options)


def open_producer(
    client: str, config: dict[str, Any], options: KafkaOptions, on_error: Callable[[Any], None]
) -> Producer:
    """A producer of *client* (a `kafka_options.client_library` answer) with *config* (`client_config`).

    *on_error* hears about client errors the library reports on its own (librdkafka's error callback,
    with its ``KafkaError``).
    """
    key = key_function(options.key)
    if client == "confluent-kafka":
        from .kafka_confluent_producer import ConfluentProducer

        return ConfluentProducer(config, key, on_error, block=options.request_timeout)
    from .kafka_python_producer import KafkaPythonProducer

    return KafkaPythonProducer(config, key)
