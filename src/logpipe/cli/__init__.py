"""The ``logpipe`` command: one sub-command per job, each in its own module."""

from __future__ import annotations

import click

from .. import __version__
from .demo import demo
from .exporters import exporters
from .health import health_command
from .kibana import kibana
from .replay import replay
from .search import search
from .ship import ship
from .status import status_command
from .tail import tail

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logpipe")
def main() -> None:
    """Collect structured logs from many machines into one searchable place."""


main.add_command(demo)
main.add_command(exporters)
main.add_command(ship)
main.add_command(search)
main.add_command(replay)
main.add_command(tail)
main.add_command(health_command)
main.add_command(kibana)
main.add_command(status_command)
