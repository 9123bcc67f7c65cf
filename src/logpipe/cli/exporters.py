"""``logpipe exporters``: what is installed and how to configure it."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from .. import config, plugins
from ..config import SettingDoc
from ..exceptions import ConfigError


@click.command()
@click.option("--settings/--no-settings", default=True, help="Show each exporter's settings.")
@click.option("--markdown", is_flag=True, help="Print the settings of logpipe's own exporters as Markdown.")
def exporters(settings: bool, markdown: bool) -> None:
    """List installed exporter plugins and their LOGPIPE_* settings."""
    if markdown:
        click.echo(settings_markdown(), nl=False)
        return
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
    for title, rows in _sections(found):
        table = Table(title=title)
        for column, style in (("variable", "cyan"), ("type", None), ("default", None), ("meaning", None)):
            table.add_column(column, style=style, no_wrap=column == "variable")
        for row in rows:
            table.add_row(row.env, row.type, row.default, row.help)
        console.print(table)


def _sections(names: object) -> list[tuple[str, list[SettingDoc]]]:
    """(title, rows) for the core settings, then each loadable exporter."""
    sections = [("Core settings", config.describe(config.Settings, config.CORE_PREFIX))]
    for name in sorted(names):  # type: ignore[call-overload]
        try:
            cls = plugins.load_class(name)
        except ConfigError as exc:
            sections.append((f"{name} (not loadable: {exc})", []))
            continue
        rows = config.describe(cls.Options, plugins.options_prefix(name))
        if rows:
            sections.append((f"{name} exporter", rows))
    return sections


def settings_markdown() -> str:
    """The settings reference of logpipe's own exporters and commands (docs/configuration.md's tables)."""
    own = {n for n, ep in plugins.available().items() if ep.dist is not None and plugins.is_own(ep.dist.name)}
    from .. import kibana, tail
    from .. import ship as shipper

    lines: list[str] = []
    sections = _sections(own) + [
        ("ship settings (logpipe ship)", config.describe(shipper.ShipOptions, shipper.ENV_PREFIX)),
        ("tail settings (logpipe tail)", config.describe(tail.TailOptions, tail.ENV_PREFIX)),
        ("kibana settings (logpipe kibana import)", config.describe(kibana.KibanaOptions, kibana.ENV_PREFIX)),
    ]
    for title, rows in sections:
        lines += [f"### {title}", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{r.env}` | {r.type} | `{r.default}` | {r.help} |" for r in rows]
        lines.append("")
    return "\n".join(lines)
