"""The processor chain: structlog processors that turn a log call into a KafkaLog record.

Each processor is a plain ``(logger, method_name, event_dict) -> event_dict``
callable and can be used on its own; the function `logpipe.processors()`
assembles them in the right order together with a `Pipeline`. (This module
is ``logpipe.chain``, not ``logpipe.processors``: that name is the function
users call, and a submodule of the same name would be shadowed by it.)
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

from .record import Record, _safe_str, decode, encode, format_iso, format_time, new_id, wire_document

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
    stack for ``await log.ainfo(...)``). Records that come from plain
    ``logging`` through ``ProcessorFormatter`` carry the caller in their
    `logging.LogRecord`, which stays correct even when formatting happens on
    another thread (a ``QueueHandler``). An explicit ``FuncName=`` key wins.

    Walking the stack costs about a microsecond (every frame stepped over
    becomes a Python object), so the walk's result is remembered per call
    path: the depth of the caller, keyed by the code of the frame that ran
    the chain's caller and checked against the code just below the caller.
    A log call then looks up two frames; a path seen for the first time, or
    one that no longer matches, is walked.
    """

    def __init__(self, additional_ignores: list[str] | None = None) -> None:
        self._ignores = ("structlog", "logging", "logpipe.processors", *(additional_ignores or []))
        #: code object -> its FuncName, or None for code in an ignored module.
        self._names: dict[CodeType, str | None] = {}
        #: code of frame 2 (what called structlog's processor loop) -> (depth of the caller, code below it).
        self._paths: dict[CodeType, tuple[int, CodeType]] = {}

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if "FuncName" in event_dict:
            return event_dict
        record = event_dict.get("_record")
        if record is not None and not event_dict.get("_from_structlog", False):
            event_dict["FuncName"] = f"{_module_of(record.pathname, record.module)}.{record.funcName}"
            return event_dict
        if _ASYNC_CALLING_STACK is not None and (stack := _ASYNC_CALLING_STACK.get(None)) is not None:
            event_dict["FuncName"] = self._walk(stack)[0]
            return event_dict
        # Inlined: this runs on every log call. Frame 0 is this one, frame 1 structlog's loop.
        try:
            entry = sys._getframe(2).f_code
            path = self._paths.get(entry)
            if path is not None:
                below = sys._getframe(path[0] - 1)
                if below.f_code is path[1]:
                    name = self._names.get(below.f_back.f_code)  # type: ignore[union-attr]
                    if name is not None:
                        event_dict["FuncName"] = name
                        return event_dict
        except ValueError:  # a shallower stack than the remembered path
            entry = None
        name, depth, below_code = self._walk(sys._getframe(1))
        if entry is not None and below_code is not None:
            self._paths[entry] = (depth + 1, below_code)  # depth from this frame, not from frame 1
        event_dict["FuncName"] = name
        return event_dict

    def _walk(self, frame: FrameType | None) -> tuple[str, int, CodeType | None]:
        """The first frame from *frame* outward outside the ignored modules.

        Returns its FuncName, its depth counted from *frame* (0 is *frame*)
        and the code of the ignored frame just below it (None when *frame*
        itself is the caller).
        """
        depth, below = 0, None
        while frame is not None:
            code = frame.f_code
            name = self._names.get(code, _UNSEEN)
            if name is _UNSEEN:
                name = self._learn(frame)
            if name is not None:
                return name, depth, below
            depth, below, frame = depth + 1, code, frame.f_back
        return "?", depth, None

    def _learn(self, frame: FrameType) -> str | None:
        """Classify a code object seen for the first time: its FuncName, or None when ignored."""
        if len(self._names) > 10_000:  # code objects of functions created at run time, e.g. lambdas
            self._names.clear()
            self._paths.clear()
        code = frame.f_code
        module = frame.f_globals.get("__name__", "?")
        if module.startswith(self._ignores):
            name = None
        else:
            qual = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
            name = f"{module}.{qual}"
        self._names[code] = name
        return name


#: The code cache's "not classified yet" marker (None means "ignored").
_UNSEEN: Any = object()

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
            # From the encoded payload, not *doc*: its keys are strings and its text valid UTF-8
            # (what the console can print), whatever the application passed in.
            shown = decode(payload)
            readable = {
                "timestamp": shown["Time"],
                "level": shown["Type"],
                "event": shown["Msg"],
                **shown["Field"],
                "func": shown["FuncName"],
            }
            return self._console(logger, shown["Type"], readable)
        raise structlog.DropEvent
