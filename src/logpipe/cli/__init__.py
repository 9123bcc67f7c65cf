"""The ``logpipe`` command: one sub-command per job, each in its own module.

A sub-command's module is imported only when that sub-command runs (click's
"lazily loading subcommands" pattern): ``logpipe tail`` starts without
importing the search renderer, the shipper or Kibana's client, which would
otherwise be most of its start-up time.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .. import __version__

__all__ = ["main"]

#: Sub-command name -> ``module:attribute`` of its click command, relative to this package.
COMMANDS = {
    "demo": "demo:demo",
    "exporters": "exporters:exporters",
    "health": "health:health_command",
    "kibana": "kibana:kibana",
    "replay": "replay:replay",
    "search": "search:search",
    "ship": "ship:ship",
    "status": "status:status_command",
    "tail": "tail:tail",
}


class LazyGroup(click.Group):
    """A group whose commands are imported from `COMMANDS` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in COMMANDS:
            return command
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        loaded: Any = getattr(importlib.import_module(f".{module}", __name__), attribute)
        if not isinstance(loaded, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
        self.add_command(loaded, cmd_name)
        return loaded


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logpipe")
def main() -> None:
    """Collect structured logs from many machines into one searchable place."""
