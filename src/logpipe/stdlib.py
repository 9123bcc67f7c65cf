"""Standard library `logging` into logpipe: `LoggingHandler`, and capturing the root logger.

Most log lines of a real Python application come from `logging`: its older
modules, requests, SQLAlchemy, uvicorn, Celery. `LoggingHandler` (the shape
of OpenTelemetry's ``LoggingHandler``) sends each `logging.LogRecord`
through the same chain and exporters as a structlog call:

* ``Type`` is the level name in lower case (``warning``), ``Msg`` the
  formatted message, ``Time`` when the record was made;
* ``FuncName`` is the real caller (``module.function`` from the record);
* ``extra=`` keys land in ``Field``; an exception's traceback in
  ``Field.exception``; redaction and the trace context apply as usual.

``LOGPIPE_CAPTURE_STDLIB=true`` (or ``configure(capture_stdlib=True)``)
attaches one to the root logger, for containers that configure by
environment.

No feedback loop: a record made while logpipe itself is at work (on its
worker, replay or exporter threads, or on kafka-python's network threads,
which is where a failing send is logged) is dropped, and so is anything
logged under the ``logpipe`` logger; otherwise the complaint of a failing
exporter would be queued for that same exporter.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from . import pipeline as _pipeline
from .record import _safe_str
from .report import Reporter

__all__ = ["LoggingHandler", "capture_root"]

#: Attributes every `logging.LogRecord` has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

#: Threads that belong to logpipe or to a client library logpipe drives.
_OWN_THREADS = ("logpipe", "kafka-python")

_report = Reporter("logging handler: ")


class LoggingHandler(logging.Handler):
    """A `logging.Handler` that sends records through logpipe (the current pipeline, or *pipeline*)."""

    def __init__(self, level: int | str = logging.NOTSET, *, pipeline: _pipeline.Pipeline | None = None) -> None:
        super().__init__(level)
        self._pipeline = pipeline
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if _feedback(record) or getattr(self._busy, "on", False):
            return
        target = self._pipeline or _pipeline.current()
        if target is None:
            return  # logpipe is not configured (yet): the record goes to the other handlers only
        self._busy.on = True
        try:
            target.ingest(record.levelname.lower(), _event(record))
        except Exception as exc:  # a log call never raises into the application
            _report(f"{type(exc).__name__}: {exc}")
        finally:
            self._busy.on = False


def _feedback(record: logging.LogRecord) -> bool:
    """The record was made by logpipe's own work: sending it would feed the exporter it is about."""
    return record.name.startswith("logpipe") or threading.current_thread().name.startswith(_OWN_THREADS)


def _event(record: logging.LogRecord) -> dict[str, Any]:
    """The structlog event dict of *record*: message, extra keys, exception, and where it was made."""
    event: dict[str, Any] = {
        key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")
    }
    event["event"] = _message(record)
    event["_record"] = record
    event["_ts"] = record.created
    if record.exc_info:
        event["exc_info"] = record.exc_info
    if record.stack_info:
        event["stack"] = record.stack_info
    return event


def _message(record: logging.LogRecord) -> str:
    """The formatted message; when ``msg % args`` fails (a wrong format string), both as they came."""
    try:
        return record.getMessage()
    except Exception:
        return f"{_safe_str(record.msg)} {_safe_str(record.args)}"


_installed: LoggingHandler | None = None


def capture_root(level: int | str = logging.INFO) -> LoggingHandler:
    """Attach (once) a `LoggingHandler` at *level* to the root logger, lowering the root's level to it if needed."""
    global _installed
    root = logging.getLogger()
    if _installed is None or _installed not in root.handlers:
        _installed = LoggingHandler(level)
        root.addHandler(_installed)
    _installed.setLevel(level)
    if root.level == logging.NOTSET or root.level > _installed.level:
        root.setLevel(_installed.level)
    return _installed
