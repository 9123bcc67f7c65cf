"""The settings reference in docs/ is generated from code; it must not drift."""

from __future__ import annotations

from pathlib import Path

from logpipe.cli.exporters import settings_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_reference_is_up_to_date() -> None:
    """docs/configuration.md holds the current settings tables (run `make docs` to refresh)."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert text.endswith(settings_markdown()), "docs/configuration.md is stale: run `make docs`"


def test_every_core_variable_is_documented() -> None:
    """Each LOGPIPE_* core variable appears in the reference."""
    from logpipe import config

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for row in config.describe(config.Settings, config.CORE_PREFIX):
        assert f"`{row.env}`" in text
