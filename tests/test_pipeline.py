"""Tests for logpipe.pipeline: configure, the exporters it builds, fan-out, send, stats, flush."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

import logpipe
from logpipe.exceptions import ConfigError
from logpipe.exporters.file import FileExporter
from logpipe.testing import InMemoryExporter


class TestConfigure:
    def test_no_configuration_uses_the_file_exporter(self) -> None:
        """The embedded default writes JSON Lines to logs/logpipe.jsonl."""
        pipeline = logpipe.configure()
        (d,) = pipeline.dispatchers
        assert isinstance(d.exporter, FileExporter)
        assert d.exporter.path == Path("logs/logpipe.jsonl") and d.fallback is None

    def test_exporter_selected_by_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """LOGPIPE_EXPORTER picks exporters by entry-point name; a comma list fans out."""
        monkeypatch.setenv("LOGPIPE_EXPORTER", "console,file")
        pipeline = logpipe.configure()
        assert [d.name for d in pipeline.dispatchers] == ["console", "file"]

    def test_fan_out_delivers_to_every_exporter(self) -> None:
        """Each exporter of a fan-out receives every record."""
        a, b = InMemoryExporter(), InMemoryExporter()
        structlog.configure(processors=logpipe.processors(exporter=[a, b], local_render="none"))
        structlog.get_logger().info("both")
        assert logpipe.flush(5.0)
        assert a.ids() == b.ids() and len(a.ids()) == 1

    def test_per_exporter_setting_from_env(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """LOGPIPE_<EXPORTER>_<SETTING> reaches the exporter's options."""
        monkeypatch.setenv("LOGPIPE_FILE_PATH", str(tmp_path / "x.jsonl"))
        exporter = logpipe.configure().dispatchers[0].exporter
        assert isinstance(exporter, FileExporter) and exporter.path == tmp_path / "x.jsonl"

    def test_exporter_options_argument_overrides_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """exporter_options beats LOGPIPE_FILE_*."""
        monkeypatch.setenv("LOGPIPE_FILE_PATH", "from-env.jsonl")
        pipeline = logpipe.configure(exporter_options={"file": {"path": "from-arg.jsonl"}})
        assert pipeline.dispatchers[0].exporter.path == Path("from-arg.jsonl")  # type: ignore[attr-defined]

    def test_unknown_exporter_names_variable_and_lists_installed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unknown name fails at configure time, listing what is installed."""
        monkeypatch.setenv("LOGPIPE_EXPORTER", "kafak")
        with pytest.raises(ConfigError) as info:
            logpipe.processors()
        message = str(info.value)
        assert message.startswith("LOGPIPE_EXPORTER: unknown exporter 'kafak'")
        assert "file" in message and "console" in message and "spool" in message

    def test_unknown_fallback_names_its_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A wrong fallback name blames LOGPIPE_FALLBACK_EXPORTER."""
        monkeypatch.setenv("LOGPIPE_FALLBACK_EXPORTER", "nowhere")
        with pytest.raises(ConfigError, match="^LOGPIPE_FALLBACK_EXPORTER: unknown exporter 'nowhere'"):
            logpipe.configure(exporter=InMemoryExporter())

    @pytest.mark.parametrize(
        ("var", "value"),
        [
            ("LOGPIPE_QUEUE_SIZE", "0"),
            ("LOGPIPE_OVERFLOW", "explode"),
            ("LOGPIPE_BATCH_DELAY", "soon"),
            ("LOGPIPE_FILE_FSYNC", "sometimes"),
            ("LOGPIPE_LOCAL_RENDER", "xml"),
        ],
    )
    def test_invalid_values_fail_at_configure_time(self, monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
        """Invalid core or exporter values raise ConfigError naming the variable."""
        monkeypatch.setenv(var, value)
        with pytest.raises(ConfigError, match=f"^{var}="):
            logpipe.processors()

    def test_spill_without_fallback_is_refused(self) -> None:
        """overflow=spill with fallback 'none' is a configuration error."""
        with pytest.raises(ConfigError, match="spill"):
            logpipe.configure(exporter=InMemoryExporter(), overflow="spill", fallback_exporter="none")

    def test_explicit_fallback_and_default_overflow(self) -> None:
        """With a fallback the default policy is spill; without, block."""
        with_fallback = logpipe.configure(exporter=InMemoryExporter(), fallback_exporter="file")
        assert with_fallback.dispatchers[0].overflow == "spill"
        without = logpipe.configure(exporter=InMemoryExporter())
        assert without.dispatchers[0].overflow == "block"

    def test_reconfigure_flushes_the_previous_pipeline(self) -> None:
        """Configuring again shuts the old pipeline down after delivering its records."""
        first = InMemoryExporter()
        structlog.configure(processors=logpipe.processors(exporter=[first], batch_delay=3600, local_render="none"))
        structlog.get_logger().info("before")
        logpipe.configure(exporter=[InMemoryExporter()])
        assert len(first.records) == 1 and first.shut_down

    def test_stats_are_public(self) -> None:
        """logpipe.stats() reports counters by exporter name."""
        structlog.configure(processors=logpipe.processors(exporter=InMemoryExporter(), local_render="none"))
        structlog.get_logger().info("counted")
        assert logpipe.flush(5.0)
        s = logpipe.stats()["InMemoryExporter"]
        assert (s.submitted, s.sent, s.dropped, s.spilled, s.failed) == (1, 1, 0, 0, 0)


class TestSend:
    def test_records_built_directly_are_shipped(self) -> None:
        """logpipe.info/error build seed-style records; logpipe.send queues them."""
        exporter = InMemoryExporter()
        logpipe.configure(exporter=[exporter])
        logpipe.send(logpipe.info("built by hand", "app.handler", {"k": "v"}))
        logpipe.send(logpipe.error(RuntimeError("boom"), "app.handler"))
        assert logpipe.flush(5.0)
        assert [(d["Type"], d["Msg"]) for d in exporter.logs()] == [("info", "built by hand"), ("error", "boom")]

    def test_send_before_configure_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Sending with no pipeline raises instead of losing the record."""
        from logpipe import pipeline

        monkeypatch.setattr(pipeline, "_current", None)
        with pytest.raises(RuntimeError, match="not configured"):
            logpipe.send(logpipe.info("x", "y"))
