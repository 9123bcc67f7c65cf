"""``logpipe replay``: send a spool directory to an exporter, on demand.

The same `Replayer` the spool exporter runs in the background, driven from the
command line: after an outage outlived the application, to move a spool to
another machine's broker, or to retry ``rejected/`` records once their cause
is fixed. Progress is committed as in the background thread, so an
interrupted replay resumes where it stopped.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from .. import plugins
from ..exceptions import ConfigError
from ..exporters.base import Exporter
from ..spool import DirectoryLock, Replayer, Spool, SpoolStats, Step

__all__ = ["replay"]


@click.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--exporter", "-e", "name", help="Exporter to replay into; default: the first of LOGPIPE_EXPORTER, else kafka."
)
@click.option(
    "--once/--follow",
    default=True,
    help="Replay what is there, then exit (default); or keep replaying new records until interrupted.",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="With --once: seconds to keep retrying an exporter that fails before giving up.",
)
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between retries and scans.")
@click.option("--batch", type=click.IntRange(min=1), default=512, show_default=True, help="Records per export.")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Move a record the exporter refuses this many times in a row to rejected/ (0: never).",
)
def replay(
    path: Path, name: str | None, once: bool, timeout: float, interval: float, batch: int, max_attempts: int
) -> None:
    """Replay the spool directory PATH into an exporter (LOGPIPE_<EXPORTER>_* configure it).

    PATH is a directory of *.jsonl segments, e.g. logs/spool/kafka; the spool
    root (logs/spool) works too when it has a subdirectory named after the
    exporter. Exits 1 when records are left that could not be sent.
    """
    console = Console()
    name = name or _default_exporter()
    directory = _spool_directory(path, name)
    lock = DirectoryLock(directory)
    if not lock.acquire():
        if once:
            raise click.ClickException(f"{directory} is being replayed by process {lock.holder()}")
        console.print(f"waiting for process {lock.holder()} to stop replaying {directory}")
    try:
        primary = plugins.create(name, None, os.environ, variable="--exporter")
    except ConfigError as exc:
        lock.release()
        raise click.UsageError(str(exc)) from exc
    spool = Spool(directory)
    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            outcome = _run(
                console,
                spool,
                lock,
                Replayer(spool, primary, batch=batch, max_attempts=max_attempts),
                once=once,
                timeout=timeout,
                interval=interval,
                stop=stop,
            )
    finally:
        primary.force_flush()
        primary.shutdown()
        lock.release()
    stats = spool.stats()
    console.print(_summary(stats, name, primary, directory))
    if stats.pending_bytes or outcome is Step.BLOCKED:
        raise SystemExit(1)


def _run(
    console: Console,
    spool: Spool,
    lock: DirectoryLock,
    replayer: Replayer,
    *,
    once: bool,
    timeout: float,
    interval: float,
    stop: threading.Event,
) -> Step:
    """Step the replayer until done (--once), interrupted, or out of patience; the last step."""
    start = spool.stats().pending_bytes
    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[records]} records"),
        TimeElapsedColumn(),
    )
    step = Step.IDLE
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("replay", total=start or 1, records=0)
        last_progress = time.monotonic()
        while not stop.is_set():
            if not lock.acquire():  # --follow waiting for another replayer
                stop.wait(interval)
                continue
            step = replayer.step()
            stats = spool.stats()
            done = max(0, start - stats.pending_bytes)
            progress.update(
                task, completed=done, total=max(start, done + stats.pending_bytes, 1), records=stats.replayed
            )
            if step is Step.PROGRESS:
                last_progress = time.monotonic()
                continue
            if once and (step is Step.IDLE or time.monotonic() - last_progress >= timeout):
                break
            stop.wait(interval)
    return step


def _default_exporter() -> str:
    names = [n.strip() for n in os.environ.get("LOGPIPE_EXPORTER", "").split(",") if n.strip()]
    return names[0] if names else "kafka"


def _spool_directory(path: Path, name: str) -> Path:
    if not path.is_dir():
        raise click.UsageError(f"{path}: no such spool directory")
    if not Spool(path).segments() and (path / name).is_dir():
        return path / name
    return path


def _summary(stats: SpoolStats, name: str, primary: Exporter, directory: Path) -> str:
    lines = [f"[bold]{stats.replayed}[/] record(s) replayed from {directory} into {primary.describe()}"]
    if stats.torn:
        lines.append(f"{stats.torn} unreadable line(s) skipped (torn writes)")
    if stats.rejected:
        lines.append(f"[yellow]{stats.rejected} record(s) refused by {name}, moved to {directory / 'rejected'}[/]")
    if stats.pending_bytes:
        lines.append(f"[red]{stats.pending_bytes} byte(s) in {stats.segments} segment(s) still pending[/]")
    return "\n".join(lines)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM finish the batch in flight, then stop (its progress is kept)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
