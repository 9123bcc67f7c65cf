"""The ``logpipe tail`` command: flags and errors (the end-to-end runs against the broker are in test_broker.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from logpipe.cli import main


class TestCommand:
    def test_nothing_to_follow_is_a_usage_error(self) -> None:
        result = CliRunner().invoke(main, ["tail"])
        assert result.exit_code == 2
        assert "LOGPIPE_TAIL_PATHS" in result.output

    def test_bad_kafka_setting_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LOGPIPE_KAFKA_ACKS", "2")
        result = CliRunner().invoke(main, ["tail", "x.log"])
        assert result.exit_code == 2
        assert "LOGPIPE_KAFKA_ACKS" in result.output
