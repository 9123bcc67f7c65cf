"""What the long-running commands (``logpipe tail``, ``logpipe ship``) share: stopping on signals, showing progress.

Why one module: both commands stop the same way (a first signal finishes
the work in hand, a second exits at once), report the same way (a live
table on a terminal, a line per status interval in a log, only errors with
--quiet) and name the flag in a configuration error the same way. Each
command keeps only what differs: the count its rate is over, the text of
its line, and its table.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import click
from rich.console import Console, RenderableType
from rich.live import Live

from ..health import Heartbeat

if TYPE_CHECKING:
    from ..metrics import MetricsServer

__all__ = ["Display", "install_signals", "metrics_option", "reporter", "serve_metrics", "with_flags"]


def with_flags(message: str, flags: Mapping[str, str]) -> str:
    """*message* with each ``argument 'setting'`` replaced by the flag that sets it (*flags*: setting -> flag)."""
    for name, flag in flags.items():
        message = message.replace(f"argument {name!r}", flag)
    return message


def reporter(
    display: Display[S], command: str, status_file: Path | None, interval: float, variable: str
) -> Callable[[S], None]:
    """The progress callback: the display, then the status file when one is set (`logpipe.health`).

    The display goes first: a status file that cannot be written goes stale,
    which is what a health check should then see, but the display stays.
    Raises `ConfigError` naming *variable* when the file cannot be written at start.
    """
    if status_file is None:
        return display.update
    beat = Heartbeat(command, status_file, interval, variable)

    def update(stats: S) -> None:
        display.update(stats)
        beat(stats)

    return update


#: Seconds of samples the displayed rate is computed over.
RATE_WINDOW = 10


class Stoppable(Protocol):
    """A `Tailer` or a `Shipper`: something a signal can stop gracefully."""

    @property
    def stopping(self) -> bool: ...

    def stop(self) -> None: ...


class Stats(Protocol):
    """The counters every display reads, whatever else a command counts."""

    @property
    def errors(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...


S = TypeVar("S", bound=Stats)


def install_signals(target: Stoppable, second: str) -> None:
    """First SIGTERM/SIGINT: `target.stop()` (a graceful stop). Second: write *second* to stderr and exit now.

    The second signal is the user insisting; the exit status is 128 + the
    signal's number, as a shell reports a process killed by it. ``os.write``
    and ``os._exit``, because a signal handler must not wait for locks that
    the interrupted code (a logger, Python's stderr buffer) may hold.
    """
    message = f"{second}\n".encode()

    def handler(signum: int, frame: object) -> None:
        if target.stopping:
            os.write(2, message)
            os._exit(128 + signum)
        target.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


class Display(Generic[S]):
    """Rich live table on a terminal, one line per interval otherwise, errors only with --quiet.

    *count* is what the rate counts (taken over the last ~10 s of samples,
    so it shows the current pace, not the average since start); *line* is
    the text after ``<name>: `` of a status line and *render* the live
    table, both given the stats and that rate.
    """

    def __init__(
        self,
        name: str,
        console: Console,
        *,
        status_interval: float,
        live: bool,
        lines: bool,
        count: Callable[[S], int],
        line: Callable[[S, float], str],
        render: Callable[[S, float], RenderableType],
    ) -> None:
        self.name = name
        self.console = console
        self.lines = lines
        self.live = Live(console=console, auto_refresh=False, transient=False) if live else None
        self._count = count
        self._line = line
        self._render = render
        self._samples: deque[tuple[float, int]] = deque(maxlen=max(2, int(RATE_WINDOW / status_interval) + 1))
        self._errors_seen = 0

    def __enter__(self) -> Display[S]:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, stats: S) -> None:
        now = time.monotonic()
        done = self._count(stats)
        self._samples.append((now, done))
        first_t, first_done = self._samples[0]
        rate = (done - first_done) / (now - first_t) if now > first_t else 0.0
        new_error = stats.errors > self._errors_seen and stats.last_error
        self._errors_seen = stats.errors
        if self.live is not None:
            self.live.update(self._render(stats, rate), refresh=True)
        elif self.lines:
            self.console.print(f"{self.name}: {self._line(stats, rate)}", highlight=False, soft_wrap=True)
        if new_error and self.live is None:
            self.console.print(f"{self.name}: {stats.last_error}", highlight=False, soft_wrap=True)


def metrics_option(env: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--metrics-address HOST:PORT`` option of a long-running command, also read from *env*."""
    return click.option(
        "--metrics-address",
        envvar=env,
        metavar="HOST:PORT",
        help=f"Serve Prometheus metrics on http://HOST:PORT/metrics (:PORT for every interface) [{env}].",
    )


def serve_metrics(address: str | None, env: str, build: Callable[[], Any]) -> MetricsServer | None:
    """Start the ``/metrics`` server for the registry *build* makes; None without *address*.

    Fails before any work starts, naming the flag and variable, when the
    address is malformed or taken, or when prometheus_client is missing.
    """
    if not address:
        return None
    from .. import metrics

    flag = f"--metrics-address ({env})"
    try:
        metrics.parse_address(address)
        import prometheus_client  # noqa: F401
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None
    except ImportError:
        raise click.UsageError(f"{flag} needs prometheus_client: pip install 'logpipe-kafkalog[metrics]'") from None
    try:
        return metrics.serve(address, build())
    except OSError as exc:
        raise click.ClickException(f"{flag}={address}: cannot listen: {exc}") from exc
