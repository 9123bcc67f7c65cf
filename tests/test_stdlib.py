"""Tests for logpipe.stdlib: standard library logging through logpipe's chain and exporters."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

import logpipe
from logpipe.stdlib import LoggingHandler
from logpipe.testing import InMemoryExporter


@pytest.fixture
def exporter() -> Iterator[InMemoryExporter]:
    """A pipeline ending in memory, and a LoggingHandler on a logger of the test's own."""
    memory = InMemoryExporter()
    logpipe.configure(exporter=[memory], local_render="none")
    yield memory


@pytest.fixture
def log(exporter: InMemoryExporter) -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.stdlib")
    handler = LoggingHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)


def _caller(log: logging.Logger) -> None:
    log.warning("slow query %s", "q1", extra={"ms": 120, "table": "orders"})


class TestRecords:
    def test_level_message_extra_and_the_real_caller(self, log: logging.Logger, exporter: InMemoryExporter) -> None:
        _caller(log)
        assert logpipe.flush(5)
        (record,) = exporter.logs()
        assert (record["Type"], record["Msg"], record["Field"]) == (
            "warning",
            "slow query q1",
            {"ms": 120, "table": "orders"},
        )
        assert record["FuncName"].endswith("test_stdlib._caller")

    def test_an_exception_comes_with_its_traceback(self, log: logging.Logger, exporter: InMemoryExporter) -> None:
        try:
            raise KeyError("order 7")
        except KeyError:
            log.exception("lookup failed")
        assert logpipe.flush(5)
        (record,) = exporter.logs()
        assert record["Type"] == "error" and "KeyError: 'order 7'" in record["Field"]["exception"]

    def test_trace_context_of_the_current_span(self, log: logging.Logger, exporter: InMemoryExporter) -> None:
        tracer = TracerProvider().get_tracer("t")
        with tracer.start_as_current_span("request") as span:
            log.info("in a span")
        assert logpipe.flush(5)
        (record,) = exporter.logs()
        assert record["TraceId"] == format(span.get_span_context().trace_id, "032x")

    def test_secrets_are_redacted(self, log: logging.Logger, exporter: InMemoryExporter) -> None:
        log.info("login password=%s", "hunter2", extra={"token": "t-1"})
        assert logpipe.flush(5)
        (record,) = exporter.logs()
        assert "hunter2" not in record["Msg"] and record["Field"]["token"] == "[REDACTED]"


class TestNoFeedback:
    def test_records_from_logpipes_own_threads_are_dropped(
        self, log: logging.Logger, exporter: InMemoryExporter
    ) -> None:
        """What a client library logs on a logpipe or kafka-python thread never re-enters the exporter."""
        for name in ("logpipe-kafka", "kafka-python-producer-1-network-thread"):
            worker = threading.Thread(target=log.error, args=("send failed",), name=name)
            worker.start()
            worker.join()
        logging.getLogger("logpipe.ship.kafka").addHandler(LoggingHandler())
        logging.getLogger("logpipe.ship.kafka").error("librdkafka said something")
        log.info("from the application")
        assert logpipe.flush(5)
        assert [r["Msg"] for r in exporter.logs()] == ["from the application"]


class TestCaptureStdlib:
    def test_the_setting_attaches_one_handler_to_the_root_logger(self, monkeypatch: pytest.MonkeyPatch) -> None:
        root = logging.getLogger()
        monkeypatch.setattr(root, "level", logging.WARNING)
        monkeypatch.setattr(root, "handlers", [])
        memory = InMemoryExporter()
        monkeypatch.setenv("LOGPIPE_CAPTURE_STDLIB", "true")
        logpipe.configure(exporter=[memory])
        logpipe.configure(exporter=[memory])  # again: still one handler
        assert sum(isinstance(h, LoggingHandler) for h in root.handlers) == 1
        logging.getLogger("some.library").info("captured at INFO")
        assert logpipe.flush(5)
        assert [r["Msg"] for r in memory.logs()] == ["captured at INFO"]

    def test_a_bad_level_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LOGPIPE_CAPTURE_STDLIB_LEVEL", "LOUD")
        with pytest.raises(logpipe.ConfigError, match="LOGPIPE_CAPTURE_STDLIB_LEVEL"):
            logpipe.configure(exporter=[InMemoryExporter()])
