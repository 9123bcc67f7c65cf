"""Every private attribute of kafka-python that logpipe touches, in one place.

kafka-python's public API cannot do three things logpipe needs: wait on a
producer batch's latch instead of putting a callback on each record (the
sender thread would do per-record work holding the application's GIL), keep
the producer's ``atexit`` hook from closing it before logpipe's final flush,
and fail a producer's unsent records at once when the broker is gone
(``close`` would first wait for them). Each is a small function here, and
``tests/test_kafka_compat.py`` asserts that every name in `PRIVATE` still
exists on the installed kafka-python, so an upgrade that removes one fails
CI loudly instead of silently slowing or hanging production.

Each function degrades to public behaviour when its attribute is missing.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["PRIVATE", "await_record", "force_close", "unregister_atexit"]

#: (kafka-python class, private attribute) pairs used below; the compat test checks each one.
PRIVATE: tuple[tuple[str, str], ...] = (
    ("kafka.producer.future.FutureRecordMetadata", "_produce_future"),
    ("kafka.producer.kafka.KafkaProducer", "_unregister_cleanup"),
    ("kafka.producer.kafka.KafkaProducer", "_sender"),
    ("kafka.producer.sender.Sender", "force_close"),
)


def await_record(future: Any, timeout: float) -> None:
    """Block until a record's future may have resolved, at most *timeout* seconds.

    A record's future resolves when its producer batch does; kafka-python
    exposes that batch's latch (``_produce_future.wait``). Without it, a
    callback sets an event instead (one callback per record).
    """
    batch = getattr(future, "_produce_future", None)
    if batch is not None and hasattr(batch, "wait"):
        batch.wait(timeout)
        return
    done = threading.Event()
    future.add_both(lambda *_: done.set())
    done.wait(timeout)


def unregister_atexit(producer: Any) -> None:
    """Stop kafka-python from closing *producer* at exit: logpipe flushes through it first, then closes it."""
    unregister = getattr(producer, "_unregister_cleanup", None)
    if unregister is not None:
        unregister()


def force_close(producer: Any) -> None:
    """Fail *producer*'s unsent records now (what kafka-python's own close falls back to after its timeout)."""
    sender = getattr(producer, "_sender", None)
    if sender is not None and hasattr(sender, "force_close"):
        sender.force_close()
