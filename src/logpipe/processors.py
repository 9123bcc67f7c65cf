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
from types import CodeType, FrameType
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import get_current
from structlog.typing import EventDict, WrappedLogger

from .record import Record, _safe_str, encode, format_iso, format_time, new_id, wire_document

__all__ = [
    "FuncNameAdder",
    "KafkaLogRenderer",
    "ServiceName",
    "add_trace_context",
]

#: Keys structlog's stdlib integration adds for its own use; never shipped.
_INTERNAL_KEYS = ("_record", "_from_structlog")

_BytesLogger = structlog.BytesLogger


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``TraceId`` (32 hex) and ``SpanId`` (16 hex) of the current span, if valid."""
    current = get_current()
    if not current:  # an empty context holds no span: the common case outside traced code
        return event_dict
    ctx = trace.get_current_span(current).get_span_context()
    if ctx.is_valid:
        event_dict["TraceId"] = format(ctx.trace_id, "032x")
        event_dict["SpanId"] = format(ctx.span_id, "016x")
    return event_dict


class FuncNameAdder:
    """Add ``FuncName``: the module-qualified function that made the log call.

    For calls made through structlog (bound loggers, the stdlib
    ``BoundLogger``) the caller is the first frame on the stack outside
    structlog, logging and this module (the rule structlog's
    `CallsiteParameterAdder` applies, including its hand-over of the calling
    stack for ``await log.ainfo(...)``). The name is cached per code object,
    so the walk is the whole cost. Records that come from plain ``logging``
    through ``ProcessorFormatter`` carry the caller in their
    `logging.LogRecord`, which stays correct even when formatting happens on
    another thread (a ``QueueHandler``). An explicit ``FuncName=`` key wins.
    """

    def __init__(self, additional_ignores: list[str] | None = None) -> None:
        self._ignores = ("structlog", "logging", "logpipe.processors", *(additional_ignores or []))
        self._names: dict[CodeType, str] = {}

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if "FuncName" in event_dict:
            return event_dict
        record = event_dict.get("_record")
        if record is not None and not event_dict.get("_from_structlog", False):
            event_dict["FuncName"] = f"{_module_of(record.pathname, record.module)}.{record.funcName}"
            return event_dict
        # The stack walk is inlined: it runs on every log call. Frame 1 is structlog's.
        frame: FrameType | None = sys._getframe(1)
        if _ASYNC_CALLING_STACK is not None:
            frame = _ASYNC_CALLING_STACK.get(frame)
        ignores = self._ignores
        while frame is not None and frame.f_globals.get("__name__", "").startswith(ignores):
            frame = frame.f_back
        name = self._names.get(frame.f_code) if frame is not None else "?"
        event_dict["FuncName"] = name if name is not None else self._name_of(frame)
        return event_dict

    def _name_of(self, frame: FrameType | None) -> str:
        if frame is None:
            return "?"
        code = frame.f_code
        name = self._names.get(code)
        if name is None:
            if len(self._names) > 10_000:
                self._names.clear()
            qual = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
            name = self._names[code] = f"{frame.f_globals.get('__name__', '?')}.{qual}"
        return name


#: structlog's hand-over of the caller's frame for async log methods, when present.
_ASYNC_CALLING_STACK = getattr(structlog.contextvars, "_ASYNC_CALLING_STACK", None)


@lru_cache(maxsize=1024)
def _module_of(pathname: str, fallback: str) -> str:
    """The import name of the module loaded from *pathname*."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == pathname:
            return name
    return fallback


class ServiceName:
    """Resolves the service name, cheaply enough to ask on every log call.

    An explicit name wins; otherwise the SDK tracer provider's resource, so a
    service configured in code is honoured; otherwise the resource the SDK
    builds from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
    OpenTelemetry lets the global provider be set only once, so once a real
    provider is seen the answer is final; until then it is re-checked at most
    once a second.
    """

    def __init__(self, explicit: str = "") -> None:
        self._name = explicit
        self.final = bool(explicit)
        self._checked = float("-inf")

    def __call__(self, now: float | None = None) -> str:
        """The name; *now* (epoch seconds) saves a clock read on the hot path."""
        if self.final:
            return self._name
        now = time.time() if now is None else now
        if not 0 <= now - self._checked < 1.0:
            self._checked = now
            provider = trace.get_tracer_provider()
            self.final = not isinstance(provider, trace.ProxyTracerProvider)
            self._name = _service_of(provider)
        return self._name


def _service_of(provider: object) -> str:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = getattr(provider, "resource", None)
    if not isinstance(resource, Resource):
        resource = Resource.create()
    return str(resource.attributes.get(SERVICE_NAME, ""))


Submit = Callable[[Record], Any]

#: ``Record(...)`` minus the named tuple's Python-level ``__new__`` (~0.3 us a call).
_new_record = tuple.__new__


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
        self._local_json = local == "json"
        self._iso = time_format == "iso"
        self._fixed_service = ""  # the service name, once ServiceName says it is final

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        ts = time.time()
        pop = event_dict.pop
        pop("_record", None)  # _INTERNAL_KEYS, unrolled
        pop("_from_structlog", None)
        msg = pop("event", "")
        level = pop("level", method_name)
        action = pop("action", self._action)
        func_name = pop("FuncName", "")
        trace_id = pop("TraceId", "")
        span_id = pop("SpanId", "")
        service = self._fixed_service or self._service_name(ts)
        record_id = new_id()
        doc = wire_document(
            level,
            action,
            format_iso(ts, self._utc) if self._iso else format_time(ts, self._time_format, utc=self._utc),
            msg if type(msg) is str else _safe_str(msg),
            event_dict,
            func_name,
            trace_id,
            span_id,
            service,
            record_id,
        )
        payload = encode(doc)
        self._submit(_new_record(Record, (record_id, ts, trace_id, service, payload)))
        if self._local_json:
            return payload if isinstance(logger, _BytesLogger) else payload.decode()
        return self._render_local(logger, doc, payload)

    def _service_name(self, ts: float) -> str:
        """Ask `ServiceName`; once its answer is final, keep it for the next calls."""
        name = self._service(ts)
        if self._service.final:
            self._fixed_service = name
        return name

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
