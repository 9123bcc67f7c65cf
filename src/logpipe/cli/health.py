"""``logpipe health``: exit 0 when the ``ship`` / ``tail`` of this container is working, 1 otherwise.

The container image's ``HEALTHCHECK`` runs it. It reads the status files the
commands write (``LOGPIPE_SHIP_STATUS_FILE``, ``LOGPIPE_TAIL_STATUS_FILE`` or
``--status-file``); see `logpipe.health` for what counts as healthy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import config, health
from ..exceptions import ConfigError

__all__ = ["health_command"]


def _configured() -> list[tuple[str, Path]]:
    """(variable, path) of every status file the environment names; a malformed variable is a usage error."""
    from .. import ship as shipper
    from .. import tail

    try:
        files = [
            (shipper.ENV_PREFIX, config.load(shipper.ShipOptions, shipper.ENV_PREFIX).status_file),
            (tail.ENV_PREFIX, config.load(tail.TailOptions, tail.ENV_PREFIX).status_file),
        ]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    return [(f"{prefix}STATUS_FILE", path) for prefix, path in files if path is not None]


@click.command("health")
@click.option(
    "--status-file",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Status file to check; repeatable (default: LOGPIPE_SHIP_STATUS_FILE and LOGPIPE_TAIL_STATUS_FILE).",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    default=health.DEFAULT_MAX_AGE,
    show_default=True,
    help="Seconds without an update after which the command counts as stuck or dead.",
)
@click.option(
    "--max-waiting",
    type=click.FloatRange(min=0),
    default=health.DEFAULT_MAX_WAITING,
    show_default=True,
    help="Seconds a command may wait for Kafka / Elasticsearch before it counts as unhealthy.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
def health_command(files: tuple[Path, ...], max_age: float, max_waiting: float, quiet: bool) -> None:
    """Check that logpipe ship / tail are running: status files fresh, process alive, not blocked too long.

    Exit status 0 when every status file found is healthy, 1 when one is
    not or none exists yet (the command has not started), 2 for usage errors.
    """
    named = [("--status-file", path) for path in files] or _configured()
    if not named:
        raise click.UsageError(
            "no status file to check: set LOGPIPE_SHIP_STATUS_FILE / LOGPIPE_TAIL_STATUS_FILE or pass --status-file"
        )
    present = [(variable, path) for variable, path in named if path.exists()]
    if not present:
        listing = ", ".join(f"{variable}={str(path)!r}" for variable, path in named)
        click.echo(f"unhealthy: no status file yet ({listing}): not started, or not writing it", err=True)
        sys.exit(1)
    healthy = True
    for variable, path in present:
        verdict = _verdict(variable, path, max_age, max_waiting)
        healthy = healthy and verdict.healthy
        if not verdict.healthy or not quiet:
            click.echo(verdict.reason, err=not verdict.healthy)
    sys.exit(0 if healthy else 1)


def _verdict(variable: str, path: Path, max_age: float, max_waiting: float) -> health.Verdict:
    try:
        status = health.read_status(path)
    except (OSError, ValueError) as exc:
        return health.Verdict(False, f"unhealthy: {variable}={str(path)!r} unreadable ({exc})")
    return health.check(status, max_age=max_age, max_waiting=max_waiting)
