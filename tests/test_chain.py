"""Tests for logpipe.processors, through a real structlog chain and a real SDK tracer."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider

import logpipe
from logpipe.chain import FuncNameAdder, ServiceName, add_trace_context
from logpipe.record import WIRE_KEYS
from logpipe.testing import InMemoryExporter


@pytest.fixture
def memory() -> Iterator[InMemoryExporter]:
    """A pipeline that ends in memory; structlog configured to use it."""
    exporter = InMemoryExporter()
    structlog.configure(processors=logpipe.processors(exporter=[exporter], local_render="none"))
    yield exporter


def logged(memory: InMemoryExporter) -> list[dict]:  # type: ignore[type-arg]
    assert logpipe.flush(5.0)
    return memory.logs()  # type: ignore[return-value]


# module-level helpers so FuncName has a known, nested shape
def inner_call() -> None:
    structlog.get_logger().info("from inner")


def outer_call() -> None:
    inner_call()


class Service:
    def handle(self) -> None:
        structlog.get_logger().bind(req="r1").warning("in method")


class TestTraceContext:
    def test_ids_of_the_current_span(self, memory: InMemoryExporter) -> None:
        """Inside a span, TraceId/SpanId are the span's ids in lowercase hex."""
        tracer = TracerProvider().get_tracer("t")
        with tracer.start_as_current_span("op") as span:
            structlog.get_logger().info("inside")
            ctx = span.get_span_context()
        structlog.get_logger().info("outside")
        inside, outside = logged(memory)
        assert inside["TraceId"] == format(ctx.trace_id, "032x")
        assert inside["SpanId"] == format(ctx.span_id, "016x")
        assert re.fullmatch(r"[0-9a-f]{32}", inside["TraceId"]) and re.fullmatch(r"[0-9a-f]{16}", inside["SpanId"])
        assert outside["TraceId"] == "" and outside["SpanId"] == ""

    def test_processor_adds_nothing_without_a_span(self) -> None:
        """With no valid span the event dict is left alone."""
        assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}

    def test_trace_id_travels_on_the_record(self, memory: InMemoryExporter) -> None:
        """Exporters can route on the trace id without parsing the payload."""
        with TracerProvider().get_tracer("t").start_as_current_span("op") as span:
            structlog.get_logger().info("x")
        assert logpipe.flush(5.0)
        assert memory.records[0].trace_id == format(span.get_span_context().trace_id, "032x")


@pytest.fixture
def no_sdk_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any global tracer provider an earlier test installed (OpenTelemetry allows one per process)."""
    from opentelemetry import trace

    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)


class TestServiceName:
    def test_explicit_name_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A name given in code beats the environment."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        assert ServiceName("explicit")() == "explicit"

    @pytest.mark.usefixtures("no_sdk_provider")
    def test_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_SERVICE_NAME is honoured when nothing else is set."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "orders")
        assert ServiceName()() == "orders"

    @pytest.mark.usefixtures("no_sdk_provider")
    def test_resource_attributes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """service.name in OTEL_RESOURCE_ATTRIBUTES is honoured too."""
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=billing")
        assert ServiceName()() == "billing"

    def test_sdk_provider_resource(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A tracer provider configured in code supplies the name."""
        from opentelemetry import trace

        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "in-code"}))
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
        assert ServiceName()() == "in-code"

    def test_answer_is_final_once_a_provider_is_set(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A proxy provider is re-checked; a real one is cached for good."""
        from opentelemetry import trace

        calls: list[object] = []
        providers = [trace.ProxyTracerProvider(), TracerProvider(resource=Resource.create({SERVICE_NAME: "late"}))]

        def get() -> object:
            calls.append(1)
            return providers[min(len(calls) - 1, 1)]

        monkeypatch.setattr(trace, "get_tracer_provider", get)
        name = ServiceName()
        first = name(now=100.0)
        assert name(now=100.5) == first and len(calls) == 1  # within the second: no re-check
        assert name(now=101.5) == "late" and len(calls) == 2
        assert name(now=500.0) == "late" and len(calls) == 2  # final


class TestFuncName:
    def test_nested_calls(self, memory: InMemoryExporter) -> None:
        """FuncName is the function that called the logger, not its caller."""
        outer_call()
        assert logged(memory)[0]["FuncName"] == f"{__name__}.inner_call"

    def test_bound_logger_in_a_method(self, memory: InMemoryExporter) -> None:
        """Bound loggers and methods give module.Class.method."""
        Service().handle()
        (doc,) = logged(memory)
        assert doc["FuncName"] == f"{__name__}.Service.handle"
        assert doc["Field"] == {"req": "r1"}

    def test_stdlib_bound_logger(self) -> None:
        """structlog -> stdlib logging: FuncName still points at the app."""
        exporter = InMemoryExporter()
        structlog.configure(
            processors=logpipe.processors(exporter=[exporter]),
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        structlog.get_logger("app").info("via stdlib", n=1)
        assert logpipe.flush(5.0)
        (doc,) = exporter.logs()
        assert doc["FuncName"] == f"{__name__}.TestFuncName.test_stdlib_bound_logger"
        assert doc["Field"] == {"n": 1}

    def test_plain_logging_through_processor_formatter(self) -> None:
        """stdlib logging -> ProcessorFormatter: FuncName comes from the LogRecord."""
        exporter = InMemoryExporter()
        chain = logpipe.processors(exporter=[exporter])
        handler = logging.StreamHandler()
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *chain],
            )
        )
        log = logging.getLogger("plain-stdlib-test")
        log.addHandler(handler)
        log.propagate = False
        try:
            log.error("legacy %s", "code")
        finally:
            log.removeHandler(handler)
        assert logpipe.flush(5.0)
        (doc,) = exporter.logs()
        assert doc["FuncName"] == f"{__name__}.TestFuncName.test_plain_logging_through_processor_formatter"
        assert (doc["Type"], doc["Msg"]) == ("error", "legacy code")

    def test_foreign_log_record_is_trusted(self) -> None:
        """A LogRecord from plain logging names the caller, even off-thread (QueueHandler)."""
        rec = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None, func="legacy_handler")
        out = FuncNameAdder()(None, "info", {"_record": rec, "_from_structlog": False})
        assert out["FuncName"] == f"{__name__}.legacy_handler"

    @pytest.mark.parametrize("wrapper", ["native", "stdlib"])
    def test_each_call_path_keeps_its_own_caller(self, wrapper: str) -> None:
        """The remembered depth of one path never names the wrong frame on another.

        One logger reached through methods of different depths (the native
        ``exception`` goes through ``error``, ``log`` through the level's
        method), from callers at different depths, interleaved so each call
        follows a differently shaped one.
        """
        exporter = InMemoryExporter()
        chain = logpipe.processors(exporter=[exporter], local_render="none")
        if wrapper == "stdlib":
            structlog.configure(
                processors=chain,
                logger_factory=structlog.stdlib.LoggerFactory(),
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        else:
            structlog.configure(processors=chain)
        log = structlog.get_logger("paths")

        def direct(method: str) -> None:
            if method == "exception":
                try:
                    raise ValueError("x")
                except ValueError:
                    log.exception("e")
            elif method == "log":
                log.log(logging.WARNING, "l")
            else:
                getattr(log, method)("m")

        def nested(method: str) -> None:
            log.info("n")  # every caller logs too: its code is known, so a wrong depth would name it
            direct(method)

        def bound(method: str) -> None:
            getattr(log.bind(k=1), "info" if method in ("exception", "log") else method)("b")

        log.info("t")
        methods = ("info", "exception", "error", "log")
        calls = [(f, m) for _ in range(3) for m in methods for f in (direct, nested, bound)]
        for func, method in calls:
            func(method)
        assert logpipe.flush(5.0)
        test = f"{__name__}.TestFuncName.test_each_call_path_keeps_its_own_caller"
        expected = [test] + [
            name
            for f, _ in calls
            for name in ([f"{test}.<locals>.nested"] if f is nested else [])
            + [f"{test}.<locals>.{'direct' if f is nested else f.__name__}"]
        ]
        assert [doc["FuncName"] for doc in exporter.logs()] == expected

    def test_async_log_methods_name_the_awaiting_function(self, memory: InMemoryExporter) -> None:
        """``await log.ainfo()`` runs the chain in a thread; structlog hands over the caller's stack."""
        import asyncio

        async def handler() -> None:
            log = structlog.get_logger()
            log.info("sync first")
            await log.ainfo("async")
            log.info("sync again")

        asyncio.run(handler())
        names = [doc["FuncName"] for doc in logged(memory)]
        test = f"{__name__}.TestFuncName.test_async_log_methods_name_the_awaiting_function"
        assert names == [f"{test}.<locals>.handler"] * 3

    def test_explicit_func_name_wins(self) -> None:
        """A caller that knows better can pass FuncName itself."""
        assert FuncNameAdder()(None, "info", {"FuncName": "x.y"})["FuncName"] == "x.y"


class TestRecordShape:
    def test_wire_keys_and_mapping(self, memory: InMemoryExporter) -> None:
        """Level, event, action and the other keys land where the seed expects them."""
        structlog.get_logger().info("order placed", action="buy", order=7, tags={"a"})
        structlog.get_logger().warning("no action")
        first, second = logged(memory)
        assert tuple(first) == WIRE_KEYS
        assert (first["Type"], first["Action"], first["Msg"]) == ("info", "buy", "order placed")
        assert first["Field"] == {"order": 7, "tags": ["a"]}
        assert (second["Type"], second["Action"]) == ("warning", "click")

    def test_default_action_is_configurable(self) -> None:
        """LOGPIPE_ACTION / action= sets the Action of records without one."""
        exporter = InMemoryExporter()
        structlog.configure(processors=logpipe.processors(exporter=[exporter], action="api"))
        structlog.get_logger().info("x")
        assert logpipe.flush(5.0)
        assert exporter.logs()[0]["Action"] == "api"

    def test_exception_text_with_traceback(self, memory: InMemoryExporter) -> None:
        """log.exception records Type error and the traceback under Field.exception."""

        def fail() -> None:
            raise KeyError("missing")

        try:
            fail()
        except KeyError:
            structlog.get_logger().exception("lookup failed")
        (doc,) = logged(memory)
        assert doc["Type"] == "error"
        assert "Traceback (most recent call last)" in doc["Field"]["exception"]
        assert "in fail" in doc["Field"]["exception"] and "KeyError: 'missing'" in doc["Field"]["exception"]

    def test_chinese_and_emoji(self, memory: InMemoryExporter) -> None:
        """Non-ASCII text survives intact in Msg and Field."""
        structlog.get_logger().info("用户登录成功 🎉", 城市="北京", note="✅")
        (doc,) = logged(memory)
        assert doc["Msg"] == "用户登录成功 🎉"
        assert doc["Field"] == {"城市": "北京", "note": "✅"}
        assert "用户登录成功 🎉".encode() in memory.records[0].payload

    def test_unserialisable_fields_are_printable(self, memory: InMemoryExporter) -> None:
        """Objects, sets, bytes, NaN and cycles never make a log call fail."""
        cyc: list[object] = []
        cyc.append(cyc)
        structlog.get_logger().info("odd", obj=object(), s={1}, b=b"\x00", nan=float("nan"), cyc=cyc)
        (doc,) = logged(memory)
        f = doc["Field"]
        assert f["obj"].startswith("<object object at")
        assert (f["s"], f["b"], f["nan"], f["cyc"]) == ([1], "\x00", "nan", ["<cycle list>"])

    def test_non_string_event(self, memory: InMemoryExporter) -> None:
        """A non-string event is rendered as text."""
        structlog.get_logger().info(12345)
        assert logged(memory)[0]["Msg"] == "12345"

    def test_contextvars_are_merged(self, memory: InMemoryExporter) -> None:
        """Values bound with structlog.contextvars end up in Field."""
        structlog.contextvars.bind_contextvars(request_id="abc")
        try:
            structlog.get_logger().info("x")
        finally:
            structlog.contextvars.clear_contextvars()
        assert logged(memory)[0]["Field"] == {"request_id": "abc"}


class TestLocalRendering:
    def test_json_goes_to_the_local_logger(self, capsys: pytest.CaptureFixture[str]) -> None:
        """By default the local logger prints the same JSON line that is shipped."""
        exporter = InMemoryExporter()
        structlog.configure(processors=logpipe.processors(exporter=[exporter]))
        structlog.get_logger().info("printed", k=1)
        assert logpipe.flush(5.0)
        assert capsys.readouterr().out.strip().encode() == exporter.records[0].payload

    def test_bytes_logger_gets_bytes(self) -> None:
        """BytesLoggerFactory receives bytes, with no decode step."""
        exporter = InMemoryExporter()
        chain = logpipe.processors(exporter=[exporter])
        out = chain[-1](structlog.BytesLogger(), "info", {"event": "b"})
        assert isinstance(out, bytes) and b'"Msg":"b"' in out

    def test_console_rendering(self, capsys: pytest.CaptureFixture[str]) -> None:
        """local_render=console prints a readable line instead of JSON."""
        structlog.configure(processors=logpipe.processors(exporter=[InMemoryExporter()], local_render="console"))
        structlog.get_logger().info("readable", k=1)
        out = capsys.readouterr().out
        assert "readable" in out and "k=1" in out and not out.startswith("{")

    def test_none_drops_locally_but_still_ships(self, capsys: pytest.CaptureFixture[str]) -> None:
        """local_render=none prints nothing, yet the record is exported."""
        exporter = InMemoryExporter()
        structlog.configure(processors=logpipe.processors(exporter=[exporter], local_render="none"))
        structlog.get_logger().info("quiet")
        assert logpipe.flush(5.0)
        assert capsys.readouterr().out == ""
        assert exporter.logs()[0]["Msg"] == "quiet"
