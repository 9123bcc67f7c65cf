"""structlog processors that turn a log call into a KafkaLog record.

Each processor is a plain ``(logger, method_name, event_dict) -> event_dict``
callable and can be used on its own; `logpipe.processors` assembles them in
the right order together with a `Pipeline`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import structlog
from opentelemetry import trace
from structlog.processors import CallsiteParameter, CallsiteParameterAdder
from structlog.typing import EventDict, WrappedLogger

from .record import HOST, Record, _safe_str, encode, format_time, new_id

__all__ = [
    "FuncNameAdder",
    "KafkaLogRenderer",
    "ServiceName",
    "add_trace_context",
]

#: Keys structlog's stdlib integration adds for its own use; never shipped.
_INTERNAL_KEYS = ("_record", "_from_structlog")


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``TraceId`` (32 hex) and ``SpanId`` (16 hex) of the current span, if valid."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["TraceId"] = format(ctx.trace_id, "032x")
        event_dict["SpanId"] = format(ctx.span_id, "016x")
    return event_dict


class FuncNameAdder:
    """Add ``FuncName``: the module-qualified function that made the log call.

    Calls made through structlog (bound loggers, the stdlib ``BoundLogger``)
    are found on the stack by structlog's own `CallsiteParameterAdder`, which
    skips structlog's and logging's frames. Records that come from plain
    ``logging`` through ``ProcessorFormatter`` carry the caller in their
    `logging.LogRecord`, which stays correct even when formatting happens on
    another thread (a ``QueueHandler``). An explicit ``FuncName=`` key wins.
    """

    def __init__(self, additional_ignores: list[str] | None = None) -> None:
        self._qual = CallsiteParameter.QUAL_NAME if sys.version_info >= (3, 11) else CallsiteParameter.FUNC_NAME
        self._callsite = CallsiteParameterAdder(
            [CallsiteParameter.QUAL_MODULE, self._qual],
            additional_ignores=["logpipe.processors", *(additional_ignores or [])],
        )

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if "FuncName" in event_dict:
            return event_dict
        record = event_dict.get("_record")
        if record is not None and not event_dict.get("_from_structlog", False):
            event_dict["FuncName"] = f"{_module_of(record.pathname, record.module)}.{record.funcName}"
            return event_dict
        site = self._callsite(logger, method_name, {})
        event_dict["FuncName"] = f"{site['qual_module']}.{site[self._qual.value]}"
        return event_dict


@lru_cache(maxsize=1024)
def _module_of(pathname: str, fallback: str) -> str:
    """The import name of the module loaded from *pathname*."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == pathname:
            return name
    return fallback


class ServiceName:
    """Resolves the service name once per tracer provider.

    An explicit name wins; otherwise the SDK tracer provider's resource, so a
    service configured in code is honoured; otherwise the resource the SDK
    builds from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
    """

    def __init__(self, explicit: str = "") -> None:
        self._explicit = explicit
        self._provider: object = None
        self._name = explicit

    def __call__(self) -> str:
        if self._explicit:
            return self._explicit
        provider = trace.get_tracer_provider()
        if provider is not self._provider:
            self._provider = provider
            self._name = _service_of(provider)
        return self._name


def _service_of(provider: object) -> str:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = getattr(provider, "resource", None)
    if not isinstance(resource, Resource):
        resource = Resource.create()
    return str(resource.attributes.get(SERVICE_NAME, ""))


Submit = Callable[[Record], Any]


class KafkaLogRenderer:
    """The chain's last processor: build and encode the record, hand it on.

    Keys it consumes: ``event`` (``Msg``), ``level`` (``Type``), ``action``
    (``Action``), ``FuncName``, ``TraceId``, ``SpanId``; every other key becomes
    ``Field``. The encoded `Record` goes to *submit* (a pipeline's queue), and
    the return value keeps structlog's own logger working: the JSON line,
    a console line, or nothing (``local="none"`` drops the event locally).
    """

    def __init__(
        self,
        submit: Submit,
        *,
        action: str = "click",
        time_format: str = "iso",
        utc: bool = True,
        service: ServiceName | None = None,
        local: str = "json",
    ) -> None:
        self._submit = submit
        self._action = action
        self._time_format = time_format
        self._utc = utc
        self._service = service or ServiceName()
        self._local = local
        self._console = structlog.dev.ConsoleRenderer(colors=False) if local == "console" else None

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        ts = time.time()
        for key in _INTERNAL_KEYS:
            event_dict.pop(key, None)
        msg = event_dict.pop("event", "")
        level = event_dict.pop("level", method_name)
        action = event_dict.pop("action", self._action)
        func_name = event_dict.pop("FuncName", "")
        trace_id = event_dict.pop("TraceId", "")
        span_id = event_dict.pop("SpanId", "")
        service = self._service()
        record_id = new_id()
        doc = {
            "Type": level,
            "Action": action,
            "Time": format_time(ts, self._time_format, utc=self._utc),
            "Msg": msg if type(msg) is str else _safe_str(msg),
            "Field": event_dict,
            "FuncName": func_name,
            "TraceId": trace_id,
            "SpanId": span_id,
            "Service": service,
            "Host": HOST,
            "Id": record_id,
        }
        payload = encode(doc)
        self._submit(Record(record_id, ts, trace_id, service, payload))
        return self._render_local(logger, doc, payload)

    def _render_local(self, logger: WrappedLogger, doc: dict[str, Any], payload: bytes) -> Any:
        if self._local == "json":
            return payload if isinstance(logger, structlog.BytesLogger) else payload.decode()
        if self._console is not None:
            readable = {
                "timestamp": doc["Time"],
                "level": doc["Type"],
                "event": doc["Msg"],
                **doc["Field"],
                "func": doc["FuncName"],
            }
            return self._console(logger, doc["Type"], readable)
        raise structlog.DropEvent
