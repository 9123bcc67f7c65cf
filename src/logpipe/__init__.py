"""logpipe: every log call a structured KafkaLog event, shipped to one searchable place.

Quick start::

    import structlog, logpipe
    structlog.configure(processors=logpipe.processors())
    structlog.get_logger().info("hi", user=1)

The public API is exported here; everything else is an implementation detail.
The names are loaded when first used (PEP 562): ``logpipe tail``, ``logpipe
ship`` and an exporter's child process import this package but not structlog
and the pipeline, which would otherwise be half of their start-up time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings
    from .dispatch import Dispatcher, DispatchStats
    from .exceptions import ConfigError
    from .exporters.base import Exporter, ExportResult, PartialFailure, Pending
    from .pipeline import Pipeline, configure, current, flush, processors, send, shutdown, stats
    from .record import KafkaLog, Record, error, info, make_record
    from .stdlib import LoggingHandler

__all__ = [
    "ConfigError",
    "DispatchStats",
    "Dispatcher",
    "ExportResult",
    "Exporter",
    "KafkaLog",
    "LoggingHandler",
    "PartialFailure",
    "Pending",
    "Pipeline",
    "Record",
    "Settings",
    "configure",
    "current",
    "error",
    "flush",
    "info",
    "make_record",
    "processors",
    "send",
    "shutdown",
    "stats",
]

__version__ = "0.1.0"

#: Public name -> the module (relative to this package) that defines it.
_HOME = {
    "ConfigError": ".exceptions",
    "DispatchStats": ".dispatch",
    "Dispatcher": ".dispatch",
    "ExportResult": ".exporters.base",
    "Exporter": ".exporters.base",
    "KafkaLog": ".record",
    "LoggingHandler": ".stdlib",
    "PartialFailure": ".exporters.base",
    "Pending": ".exporters.base",
    "Pipeline": ".pipeline",
    "Record": ".record",
    "Settings": ".config",
    "configure": ".pipeline",
    "current": ".pipeline",
    "error": ".record",
    "flush": ".pipeline",
    "info": ".record",
    "make_record": ".record",
    "processors": ".pipeline",
    "send": ".pipeline",
    "shutdown": ".pipeline",
    "stats": ".pipeline",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
