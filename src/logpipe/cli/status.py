"""``logpipe status``: one screen of what waits where on this machine, and an exit code for health checks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import config, status
from ..exceptions import ConfigError
from ..exporters.spool import SpoolOptions
from ..tail import ENV_PREFIX as TAIL_PREFIX
from ..tail import Registry, TailOptions

__all__ = ["status_command"]

#: Exit status when something is stuck (a spool older than --max-age, a lag over --max-lag).
STUCK = 1


def _duration(value: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    text = value.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use seconds or a duration (90s, 15m, 2h, 1d)", param_hint="--max-age"
        ) from None


@click.command("status")
@click.option(
    "--spool-dir",
    type=click.Path(path_type=Path),
    help="Spool root (default LOGPIPE_SPOOL_DIR, logs/spool).",
)
@click.option(
    "--registry",
    type=click.Path(path_type=Path),
    help="logpipe tail registry (default LOGPIPE_TAIL_REGISTRY, logs/tail-registry.json).",
)
@click.option(
    "--bootstrap-servers",
    "-b",
    help="Kafka brokers for the shipper group's lag (default LOGPIPE_SHIP_BOOTSTRAP_SERVERS, when set).",
)
@click.option("--group", "-g", help="Shipper consumer group (default LOGPIPE_SHIP_GROUP_ID, logpipe-shipper).")
@click.option(
    "--max-age",
    default="5m",
    show_default=True,
    help="A spool whose oldest record waited longer is stuck (exit status 1).",
)
@click.option("--max-lag", type=click.IntRange(0), help="A group lag (messages) over this is stuck too.")
@click.option(
    "--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1), help="Seconds to wait for Kafka."
)
def status_command(
    spool_dir: Path | None,
    registry: Path | None,
    bootstrap_servers: str | None,
    group: str | None,
    max_age: str,
    max_lag: int | None,
    timeout: float,
) -> None:
    """Show spool backlogs, tail positions and the shipper's lag; exit 1 when something is stuck.

    Stuck means: a spool's oldest waiting record is older than --max-age, or
    (with --max-lag) a partition of the shipper group lags by more. Usable
    as a container health check: `logpipe status --max-age 10m`.
    """
    limit = _duration(max_age)
    env = _environment(spool_dir, registry, bootstrap_servers, group)
    console = Console(highlight=False)
    problems: list[str] = []
    problems += _spools(console, env["spool_dir"], limit)
    _tail(console, env["registry"])
    if env["bootstrap"]:
        problems += _lag(console, env["bootstrap"], env["group"], max_lag, timeout)
    else:
        console.print(
            "[bold]Shipper lag[/]: no Kafka configured (--bootstrap-servers / LOGPIPE_SHIP_BOOTSTRAP_SERVERS)"
        )
    if problems:
        for problem in problems:
            console.print(f"[bold red]stuck[/]: {problem}", soft_wrap=True)
        raise SystemExit(STUCK)
    console.print("[green]ok[/]: nothing stuck")


def _environment(
    spool_dir: Path | None, registry: Path | None, bootstrap: str | None, group: str | None
) -> dict[str, Any]:
    """Flags, else this machine's ``LOGPIPE_*`` settings (read with the same loaders as the commands)."""
    import os

    try:
        if spool_dir is None:
            spool_dir = config.load(SpoolOptions, "LOGPIPE_SPOOL_").dir
        if registry is None:
            registry = config.load(TailOptions, TAIL_PREFIX).registry
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    return {
        "spool_dir": Path(spool_dir),
        "registry": registry,
        "bootstrap": bootstrap or os.environ.get("LOGPIPE_SHIP_BOOTSTRAP_SERVERS", "").strip(),
        "group": group or os.environ.get("LOGPIPE_SHIP_GROUP_ID", "").strip() or "logpipe-shipper",
    }


def _spools(console: Console, root: Path, limit: float) -> list[str]:
    counter = status.SpoolCounter()
    table = Table(title=f"Spool backlog ({root})", title_justify="left")
    for name, justify in (("exporter", "left"), ("records", "right"), ("bytes", "right"), ("oldest", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("rejected", justify="right")
    problems = []
    now = time.time()
    for directory in status.spool_dirs(root):
        backlog = counter.backlog(directory)
        age = backlog.age(now)
        stuck = backlog.records > 0 and age > limit
        table.add_row(
            backlog.name,
            f"{backlog.records:,}",
            _bytes(backlog.bytes),
            _age(age) if backlog.records else "-",
            f"{backlog.rejected:,}",
            style="red" if stuck else None,
        )
        if stuck:
            problems.append(
                f"spool {directory}: {backlog.records:,} record(s), "
                f"oldest waiting {_age(age)} (> --max-age {_age(limit)})"
            )
    if table.row_count:
        console.print(table)
    else:
        console.print(f"[bold]Spool backlog[/]: nothing spooled under {root}")
    return problems


def _tail(console: Console, path: Path) -> None:
    try:
        entries = list(Registry(path).load().entries.values())
    except ConfigError as exc:
        console.print(f"[bold]Tail positions[/]: [yellow]{exc}[/]", soft_wrap=True)
        return
    if not entries:
        console.print(f"[bold]Tail positions[/]: no registry at {path} (logpipe tail not run here)")
        return
    table = Table(title=f"Tail positions ({path})", title_justify="left")
    table.add_column("file", overflow="fold")
    for name in ("acknowledged", "size", "behind"):
        table.add_column(name, justify="right")
    for position in status.file_positions(entries):
        table.add_row(
            position.path,
            _bytes(position.offset),
            "gone" if position.size is None else _bytes(position.size),
            "-" if position.behind is None else _bytes(position.behind),
        )
    console.print(table)


def _lag(console: Console, bootstrap: str, group: str, max_lag: int | None, timeout: float) -> list[str]:
    try:
        lag = status.group_lag(bootstrap, group, timeout)
    except ImportError:
        console.print("[bold]Shipper lag[/]: needs kafka-python (pip install 'logpipe-kafkalog[kafka]')")
        return []
    except Exception as exc:  # noqa: BLE001 - any client error means "not reachable" here
        console.print(f"[bold]Shipper lag[/]: [yellow]Kafka at {bootstrap} not reachable: {exc}[/]", soft_wrap=True)
        # Asked to watch the lag (--max-lag) and unable to: a health check must not say "ok".
        return [f"Kafka at {bootstrap} not reachable, --max-lag cannot be checked"] if max_lag is not None else []
    if not lag:
        console.print(f"[bold]Shipper lag[/]: group {group} has no committed offsets at {bootstrap}")
        return []
    table = Table(title=f"Shipper lag (group {group} at {bootstrap})", title_justify="left")
    for name in ("partition", "committed", "end", "lag"):
        table.add_column(name, justify="left" if name == "partition" else "right")
    problems = []
    for (topic, partition), (committed, end) in lag.items():
        behind = max(0, end - committed)
        stuck = max_lag is not None and behind > max_lag
        table.add_row(
            f"{topic}[{partition}]", f"{committed:,}", f"{end:,}", f"{behind:,}", style="red" if stuck else None
        )
        if stuck:
            problems.append(f"group {group} lags {behind:,} message(s) on {topic}[{partition}] (> --max-lag {max_lag})")
    console.print(table)
    return problems


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
