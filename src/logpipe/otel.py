"""OpenTelemetry logs into logpipe: ``OTEL_LOGS_EXPORTER=logpipe``.

Applications instrumented with the OpenTelemetry SDK (or zero-code with
``opentelemetry-instrument``) choose their log exporter by entry-point name
from the ``opentelemetry_logs_exporter`` group. logpipe registers
`LogpipeLogExporter` there as ``logpipe``, so those applications send their
OTel log records through whatever ``LOGPIPE_EXPORTER`` selects (file,
Kafka, Elasticsearch, a plugin), as KafkaLog records:

==========================  ====================================================
OTel log record             KafkaLog
==========================  ====================================================
severity_text / number      ``Type`` (lower case: ``warning``, ``error`` ...)
body                        ``Msg`` (a structured body goes to ``Field.body``)
attributes                  ``Field`` (``code.*`` attributes make ``FuncName``)
timestamp                   ``Time``
trace_id / span_id          ``TraceId`` / ``SpanId``
(the process)               ``Service``: ``LOGPIPE_SERVICE``, ``OTEL_SERVICE_NAME`` or the
                            tracer provider's resource, as for every logpipe record
==========================  ====================================================

The records go through logpipe's chain (`Pipeline.ingest`), so redaction
applies. The exporter uses the application's current logpipe pipeline, or
configures one from ``LOGPIPE_*`` variables when there is none.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import export as _export

from . import pipeline as _pipeline
from .chain import _module_of

__all__ = ["LogpipeLogExporter"]

# The SDK renamed its exporter interface (LogExporter -> LogRecordExporter, in 1.39); take what is there.
_Base: Any = getattr(_export, "LogRecordExporter", None) or _export.LogExporter
_Result: Any = getattr(_export, "LogRecordExportResult", None) or _export.LogExportResult

#: OTel severity numbers (1-24) by the first of each group of four -> the KafkaLog ``Type``.
_SEVERITY = {1: "trace", 5: "debug", 9: "info", 13: "warning", 17: "error", 21: "critical"}


class LogpipeLogExporter(_Base):  # type: ignore[misc]
    """An OpenTelemetry log exporter that hands each log record to logpipe."""

    def __init__(self, pipeline: _pipeline.Pipeline | None = None) -> None:
        self._own = pipeline is None and _pipeline.current() is None
        self._pipeline = pipeline or _pipeline.current() or _pipeline.configure()

    def export(self, batch: Sequence[Any]) -> Any:
        for item in batch:
            record = getattr(item, "log_record", item)
            self._pipeline.ingest(_severity(record), _event(record))
        return _Result.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._pipeline.force_flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Flush; a pipeline this exporter made for itself is shut down too."""
        if self._own:
            self._pipeline.shutdown()
        else:
            self._pipeline.force_flush()


@functools.lru_cache(maxsize=1024)
def _module_at(path: str) -> str:
    """The import name of the module at *path* (remembered: the lookup scans ``sys.modules``)."""
    return _module_of(path, "")


def _severity(record: Any) -> str:
    text = record.severity_text
    if text:
        return str(text).lower()
    number = getattr(record.severity_number, "value", None) or 9
    return _SEVERITY[1 + 4 * ((min(max(number, 1), 24) - 1) // 4)]


def _event(record: Any) -> dict[str, Any]:
    attributes = dict(record.attributes or {})
    function = attributes.pop("code.function.name", None) or attributes.pop("code.function", None)
    namespace = attributes.pop("code.namespace", None)
    path = attributes.get("code.file.path") or attributes.get("code.filepath")
    if namespace is None and path:
        namespace = _module_at(str(path))
    body = record.body
    event: dict[str, Any] = {k: v for k, v in attributes.items() if not k.startswith("code.")}
    if isinstance(body, (Mapping, list)):
        event["body"] = body
        event["event"] = str(body.get("message", "")) if isinstance(body, Mapping) else ""
    else:
        event["event"] = "" if body is None else str(body)
    event["FuncName"] = ".".join(str(p) for p in (namespace, function) if p)
    if record.trace_id:
        event["TraceId"] = format(record.trace_id, "032x")
        event["SpanId"] = format(record.span_id or 0, "016x")
    if record.timestamp:
        event["_ts"] = record.timestamp / 1e9
    return event
