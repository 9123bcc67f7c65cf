"""Tests for logpipe.config: settings read from arguments and LOGPIPE_* variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from logpipe import config
from logpipe.config import Settings, setting
from logpipe.exceptions import ConfigError


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
