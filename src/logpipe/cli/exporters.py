"""``logpipe exporters``: what is installed and how to configure it."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from .. import config, plugins
from ..exceptions import ConfigError


@click.command()
@click.option("--settings/--no-settings", default=True, help="Show each exporter's settings.")
def exporters(settings: bool) -> None:
    """List installed exporter plugins and their LOGPIPE_* settings."""
    console = Console()
    found = plugins.available()
    summary = Table(title="Installed exporters (entry-point group logpipe.exporters)")
    for column in ("name", "provided by", "object"):
        summary.add_column(column)
    for name, entry in sorted(found.items()):
        dist = entry.dist.name if entry.dist is not None else "?"
        summary.add_row(name, dist, entry.value)
    console.print(summary)
    if not settings:
        return
    core = Table(title="Core settings")
    _settings_columns(core)
    for row in config.describe(config.Settings, config.CORE_PREFIX):
        core.add_row(row.env, row.type, row.default, row.help)
    console.print(core)
    for name in sorted(found):
        try:
            cls = plugins.load_class(name)
        except ConfigError as exc:
            console.print(f"[yellow]{name}[/]: {exc}")
            continue
        rows = config.describe(cls.Options, plugins.options_prefix(name))
        if not rows:
            continue
        table = Table(title=f"{name} settings")
        _settings_columns(table)
        for row in rows:
            table.add_row(row.env, row.type, row.default, row.help)
        console.print(table)


def _settings_columns(table: Table) -> None:
    table.add_column("variable", style="cyan", no_wrap=True)
    table.add_column("type")
    table.add_column("default")
    table.add_column("meaning")
