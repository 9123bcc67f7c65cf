"""Tests for logpipe.testing: capture_records and the in-memory exporter."""

from __future__ import annotations

import structlog

import logpipe
from logpipe.testing import InMemoryExporter, capture_records


class TestCaptureRecords:
    def test_records_are_there_when_the_call_returns(self) -> None:
        """Synchronous, through the real chain: KafkaLog keys, FuncName, fields."""
        with capture_records(service="svc") as records:
            structlog.get_logger().warning("disk low", free_mb=12)
            assert len(records) == 1
        (record,) = records
        assert (record["Type"], record["Msg"], record["Field"], record["Service"]) == (
            "warning",
            "disk low",
            {"free_mb": 12},
            "svc",
        )
        assert record["FuncName"].endswith("test_records_are_there_when_the_call_returns")

    def test_the_previous_configuration_comes_back(self) -> None:
        """After the block structlog logs where it did before (here: into a pipeline's exporter)."""
        exporter = InMemoryExporter()
        structlog.configure(processors=logpipe.processors(exporter=[exporter], local_render="none"))
        with capture_records() as records:
            structlog.get_logger().info("captured")
        structlog.get_logger().info("exported")
        assert logpipe.flush(5.0)
        assert [r["Msg"] for r in records] == ["captured"]
        assert [r["Msg"] for r in exporter.logs()] == ["exported"]

    def test_settings_apply(self) -> None:
        with capture_records(action="login", time_format="seed") as records:
            structlog.get_logger().info("x")
        assert records[0]["Action"] == "login" and len(records[0]["Time"]) == len("2026-12-03 08:00:00")
