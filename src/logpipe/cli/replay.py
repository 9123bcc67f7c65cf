"""``logpipe replay``: send a spool directory to an exporter, on demand.

The same `Replayer` the spool exporter runs in the background, driven from the
command line: after an outage outlived the application, to move a spool to
another machine's broker, or to retry ``rejected.ndjson`` records once their cause
is fixed. Progress is committed as in the background thread, so an
interrupted replay resumes where it stopped.

A dead-letter file (``<spool>/rejected.ndjson``, or any file in logpipe's
dead-letter format) is replayed by first copying its original records into a
spool directory next to it (``<file>.replay/``) and replaying that: the same
progress, retries and rejection, and an interrupted run resumes there. When
everything was sent the file is renamed ``<file>.replayed``.
"""

from __future__ import annotations

import os
import shutil
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

from .. import deadletter, durable, plugins
from ..backoff import Backoff
from ..exceptions import ConfigError
from ..exporters.base import Exporter
from ..spool import REJECTED_FILE, DirectoryLock, Replayer, Spool, SpoolStats, Step

__all__ = ["replay"]


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
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
@click.option(
    "--dead-letters",
    is_flag=True,
    help="PATH is a dead-letter file (e.g. <spool>/rejected.ndjson); implied when PATH is a file.",
)
@click.option(
    "--interval",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between scans, and the first retry delay (doubling up to 10x while the exporter fails).",
)
@click.option("--batch", type=click.IntRange(min=1), default=512, show_default=True, help="Records per export.")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help=f"Write a record the exporter refuses this many times to {REJECTED_FILE} (0: never).",
)
def replay(
    path: Path,
    name: str | None,
    once: bool,
    timeout: float,
    dead_letters: bool,
    interval: float,
    batch: int,
    max_attempts: int,
) -> None:
    """Replay the spool directory PATH into an exporter (LOGPIPE_<EXPORTER>_* configure it).

    PATH is a directory of *.jsonl segments, e.g. logs/spool/kafka; the spool
    root (logs/spool) works too when it has a subdirectory named after the
    exporter. PATH may also be a dead-letter file such as
    logs/spool/kafka/rejected.ndjson: its records are sent again. Exits 1 when
    records are left that could not be sent.
    """
    console = Console()
    name = name or _default_exporter()
    if dead_letters or path.is_file():
        if not path.is_file():
            raise click.UsageError(f"{path}: --dead-letters needs a dead-letter file")
        directory = _stage_dead_letters(console, path)
    else:
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
    if directory != path and path.is_file():
        _finish_dead_letters(console, path, directory)


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
        backoff = Backoff(interval, 10 * interval, stop=stop)
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
                backoff.reset()
                continue
            if once and (step is Step.IDLE or time.monotonic() - last_progress >= timeout):
                break
            if step is Step.IDLE:
                stop.wait(interval)
            else:
                backoff.wait()
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


def _stage_dead_letters(console: Console, path: Path) -> Path:
    """The spool directory holding *path*'s original records, made now unless an earlier run left it."""
    staging = path.with_name(path.name + ".replay")
    if staging.is_dir():
        console.print(f"resuming the replay of {path} from {staging}")
        return staging
    temp = path.with_name(f".{path.name}.replay.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    spool = Spool(temp, max_bytes=1 << 62)
    originals = [value for doc in deadletter.read(path) if (value := deadletter.original(doc)) is not None]
    try:
        for start in range(0, len(originals), 4096):
            spool.append(originals[start : start + 4096])
    finally:
        spool.close()
    durable.make_dirs(temp)
    os.rename(temp, staging)
    console.print(f"{len(originals)} dead letter(s) from {path} staged in {staging}")
    return staging


def _finish_dead_letters(console: Console, path: Path, staging: Path) -> None:
    """Everything was sent: rename the file so a second run does not send it again; drop the staging spool."""
    done = path.with_name(path.name + ".replayed")
    os.replace(path, done)
    refused = staging / REJECTED_FILE
    if refused.exists():
        console.print(f"[yellow]records refused again are in {refused}[/]")
    else:
        shutil.rmtree(staging, ignore_errors=True)
    console.print(f"{path} renamed to {done}")


def _summary(stats: SpoolStats, name: str, primary: Exporter, directory: Path) -> str:
    lines = [f"[bold]{stats.replayed}[/] record(s) replayed from {directory} into {primary.describe()}"]
    if stats.torn:
        lines.append(f"{stats.torn} unreadable line(s) skipped (torn writes)")
    if stats.rejected:
        lines.append(f"[yellow]{stats.rejected} record(s) refused by {name}, written to {directory / REJECTED_FILE}[/]")
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
