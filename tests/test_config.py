"""Tests for logpipe.config and configure-time validation in logpipe.pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import structlog

import logpipe
from logpipe import config
from logpipe.config import Settings, setting
from logpipe.exceptions import ConfigError
from logpipe.exporters.file import FileExporter
from logpipe.testing import InMemoryExporter


@dataclass(frozen=True)
class Sample:
    count: int = setting(1, "a count", check=config.at_least(1))
    ratio: float = setting(0.5, "a ratio")
    on: bool = setting(False, "a flag")
    mode: Literal["a", "b"] = setting("a", "a choice")
    names: tuple[str, ...] = setting(("x",), "a list")
    where: Path = setting(Path("p"), "a path")
    maybe: str | None = setting(None, "optional")


class TestLoad:
    def test_defaults(self) -> None:
        """No env, no arguments: the declared defaults."""
        assert config.load(Sample, "T_", environ={}) == Sample()

    def test_env_values_are_parsed_to_the_field_type(self) -> None:
        """Strings from the environment become ints, floats, bools, choices, lists, paths."""
        env = {
            "T_COUNT": "1_000",
            "T_RATIO": "0.25",
            "T_ON": "yes",
            "T_MODE": "b",
            "T_NAMES": "kafka, file,,",
            "T_WHERE": "/tmp/x",
            "T_MAYBE": "v",
        }
        got = config.load(Sample, "T_", environ=env)
        assert got == Sample(1000, 0.25, True, "b", ("kafka", "file"), Path("/tmp/x"), "v")

    def test_arguments_override_environment(self) -> None:
        """Explicit Python arguments win over env vars."""
        assert config.load(Sample, "T_", {"count": 7}, environ={"T_COUNT": "3"}).count == 7

    @pytest.mark.parametrize(
        ("var", "value", "expected"),
        [
            ("T_COUNT", "many", "T_COUNT='many': expected int"),
            ("T_COUNT", "0", "T_COUNT='0': must be at least 1"),
            ("T_ON", "maybe", "T_ON='maybe': expected bool"),
            ("T_MODE", "c", "T_MODE='c': expected a / b (choose one of a, b)"),
            ("T_RATIO", "fast", "T_RATIO='fast': expected float"),
        ],
    )
    def test_bad_env_value_names_the_variable(self, var: str, value: str, expected: str) -> None:
        """A wrong value fails with the variable name and what was expected."""
        with pytest.raises(ConfigError) as info:
            config.load(Sample, "T_", environ={var: value})
        assert str(info.value).startswith(expected)

    def test_unknown_argument(self) -> None:
        """A misspelt keyword argument is refused, listing the known ones."""
        with pytest.raises(ConfigError, match="unknown setting.*cnt.*known: count"):
            config.load(Sample, "T_", {"cnt": 1}, environ={})

    def test_describe_lists_env_names(self) -> None:
        """Every setting appears in the generated table with its variable."""
        rows = config.describe(Settings, config.CORE_PREFIX)
        envs = {r.env for r in rows}
        assert {"LOGPIPE_EXPORTER", "LOGPIPE_FALLBACK_EXPORTER", "LOGPIPE_OVERFLOW", "LOGPIPE_QUEUE_SIZE"} <= envs
        assert all(r.help for r in rows)


class TestConfigure:
    def test_no_configuration_uses_the_file_exporter(self) -> None:
        """The embedded default writes JSON Lines to logs/logpipe.jsonl."""
        pipeline = logpipe.configure()
        (d,) = pipeline.dispatchers
        assert isinstance(d.exporter, FileExporter)
        assert d.exporter.path == Path("logs/logpipe.jsonl") and d.fallback is None

    def test_exporter_selected_by_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """LOGPIPE_EXPORTER picks exporters by entry-point name; a comma list fans out."""
        monkeypatch.setenv("LOGPIPE_EXPORTER", "memory,file")
        pipeline = logpipe.configure()
        assert [d.name for d in pipeline.dispatchers] == ["memory", "file"]

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
        assert "file" in message and "console" in message and "memory" in message

    def test_unknown_fallback_names_its_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A wrong fallback name blames LOGPIPE_FALLBACK_EXPORTER."""
        monkeypatch.setenv("LOGPIPE_FALLBACK_EXPORTER", "nowhere")
        with pytest.raises(ConfigError, match="^LOGPIPE_FALLBACK_EXPORTER: unknown exporter 'nowhere'"):
            logpipe.configure(exporter="memory")

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
            logpipe.configure(exporter="memory", overflow="spill", fallback_exporter="none")

    def test_explicit_fallback_and_default_overflow(self) -> None:
        """With a fallback the default policy is spill; without, block."""
        with_fallback = logpipe.configure(exporter="memory", fallback_exporter="file")
        assert with_fallback.dispatchers[0]._overflow == "spill"
        without = logpipe.configure(exporter="memory")
        assert without.dispatchers[0]._overflow == "block"

    def test_reconfigure_flushes_the_previous_pipeline(self) -> None:
        """Configuring again shuts the old pipeline down after delivering its records."""
        first = InMemoryExporter()
        structlog.configure(processors=logpipe.processors(exporter=[first], batch_delay=3600, local_render="none"))
        structlog.get_logger().info("before")
        logpipe.configure(exporter=[InMemoryExporter()])
        assert len(first.records) == 1 and first.shut_down

    def test_stats_are_public(self) -> None:
        """logpipe.stats() reports counters by exporter name."""
        structlog.configure(processors=logpipe.processors(exporter="memory", local_render="none"))
        structlog.get_logger().info("counted")
        assert logpipe.flush(5.0)
        s = logpipe.stats()["memory"]
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
