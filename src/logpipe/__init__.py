"""logpipe: every log call a structured KafkaLog event, shipped to one searchable place.

Quick start::

    import structlog, logpipe
    structlog.configure(processors=logpipe.processors())
    structlog.get_logger().info("hi", user=1)

The public API is exported here; everything else is an implementation detail.
"""

from __future__ import annotations

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
