"""Tests for logpipe.otel: OpenTelemetry SDK log records through logpipe (OTEL_LOGS_EXPORTER=logpipe)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

import logpipe
from logpipe.otel import LogpipeLogExporter
from logpipe.testing import InMemoryExporter


def test_the_entry_point_is_registered() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="opentelemetry_logs_exporter")}
    assert found.get("logpipe") == "logpipe.otel:LogpipeLogExporter"


@pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")  # the SDK's own handler, as apps use it
def test_sdk_records_become_kafkalog_records_with_their_trace_context() -> None:
    memory = InMemoryExporter()
    pipeline = logpipe.configure(exporter=[memory], local_render="none")
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(LogpipeLogExporter(pipeline)))
    logger = logging.getLogger("tests.otel")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with TracerProvider().get_tracer("t").start_as_current_span("checkout") as span:
            logger.error("card refused, api_key=%s", "k-1", extra={"order": "o-7"})
        provider.force_flush()
        assert logpipe.flush(5)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    (record,) = memory.logs()
    assert record["Type"] == "error"
    assert record["Msg"] == "card refused, api_key=[REDACTED]"
    assert record["Field"]["order"] == "o-7"
    assert record["TraceId"] == format(span.get_span_context().trace_id, "032x")
    assert record["SpanId"] == format(span.get_span_context().span_id, "016x")
    assert record["FuncName"].endswith("test_sdk_records_become_kafkalog_records_with_their_trace_context")


def test_otel_logs_exporter_logpipe_with_the_sdks_auto_configuration(tmp_path: Path) -> None:
    """What opentelemetry-instrument does: the SDK configures itself from OTEL_* and finds logpipe by name."""
    code = textwrap.dedent(
        """
        import logging
        from opentelemetry.sdk._configuration import _OTelSDKConfigurator
        from opentelemetry._logs import get_logger_provider
        _OTelSDKConfigurator().configure()
        logging.getLogger("shop").warning("payment declined", extra={"order": "o-1"})
        get_logger_provider().shutdown()
        """
    )
    env = {
        **os.environ,
        "OTEL_LOGS_EXPORTER": "logpipe",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_SERVICE_NAME": "checkout",
        "LOGPIPE_EXPORTER": "file",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in (tmp_path / "logs" / "logpipe.jsonl").read_bytes().splitlines()]
    mine = [r for r in records if r["Msg"] == "payment declined"]
    assert len(mine) == 1
    assert (mine[0]["Type"], mine[0]["Field"], mine[0]["Service"]) == ("warning", {"order": "o-1"}, "checkout")
    assert "Traceback" not in done.stderr
