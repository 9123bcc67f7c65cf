"""Status files: how a container (or any supervisor) tells a working ``ship`` / ``tail`` from a stuck one.

Why a file and not a port: both commands are consumers with nothing to
serve, and a health check runs as a separate process (Docker's
``HEALTHCHECK``, a Kubernetes exec probe, a cron job). The long-running
command rewrites a small JSON file from its progress callback, every
``STATUS_INTERVAL`` seconds, from the same loop that does the work; so a
fresh file means the loop is turning, and its ``state`` says whether the
work gets through (``running``) or is blocked (``waiting for Kafka``,
``waiting for Elasticsearch``). `check` turns that into healthy or not;
``logpipe health`` is its command.

The file is replaced atomically (a reader sees a whole one) but not
fsynced: after a crash a heartbeat is worth nothing anyway.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .exceptions import ConfigError

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MAX_WAITING", "Heartbeat", "Verdict", "check", "read_status", "redact"]

#: Seconds after which a status file that was not rewritten means a stuck or dead process. Longer
#: than the longest wait between two progress calls (a retry backoff of at most 30 s by default).
DEFAULT_MAX_AGE = 60.0

#: Seconds a command may stay blocked (``waiting for ...``) before it counts as unhealthy.
DEFAULT_MAX_WAITING = 300.0

_USERINFO = re.compile(r"://[^/@\s]+@")


def redact(text: str) -> str:
    """*text* with the user:password of any URL in it replaced by ``***`` (errors quote node URLs)."""
    return _USERINFO.sub("://***@", text)


class Heartbeat:
    """The progress callback that writes *path*: the command's state, since when, and its counters.

    Created before the command starts, it writes a ``starting`` status at
    once, so a wrong path fails the start (naming *variable*) instead of
    leaving a health check that can never pass.
    """

    def __init__(self, command: str, path: Path, interval: float, variable: str) -> None:
        self.command = command
        self.path = Path(path)
        self.interval = interval
        self._temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._state = "starting"
        self._since = time.time()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write({"state": "starting"})
        except OSError as exc:
            raise ConfigError(f"{variable}={str(path)!r}: cannot write the status file ({exc})") from None

    def __call__(self, stats: object) -> None:
        values = _counters(stats)
        state = str(values.get("state", "running"))
        if state != self._state:
            self._state, self._since = state, time.time()
        self._write(values)

    def _write(self, values: Mapping[str, Any]) -> None:
        now = time.time()
        status = {
            "command": self.command,
            **values,
            "state": self._state,
            "state_since": round(self._since, 3),
            "updated": round(now, 3),
            "interval": self.interval,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        self._temp.write_bytes(orjson.dumps(status))
        os.replace(self._temp, self.path)


def _counters(stats: object) -> dict[str, Any]:
    """The whole-number and text fields of a stats dataclass (monotonic clock readings mean nothing elsewhere)."""
    if not dataclasses.is_dataclass(stats):
        return {}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if isinstance(value, str | int) or (value is None and field.name == "last_error"):
            values[field.name] = value
        elif isinstance(value, dict) and field.name == "lag":
            values["lag"] = sum(value.values())
    return values


def read_status(path: Path) -> dict[str, Any]:
    """The status in *path*; `ValueError` when it is not a status object, `OSError` when unreadable."""
    status = orjson.loads(Path(path).read_bytes())
    if not isinstance(status, dict) or not isinstance(status.get("updated"), int | float):
        raise ValueError("not a logpipe status file")
    return status


@dataclass(frozen=True)
class Verdict:
    """Whether one status file shows a healthy command, and a line saying why."""

    healthy: bool
    reason: str


def check(
    status: Mapping[str, Any],
    *,
    now: float | None = None,
    max_age: float = DEFAULT_MAX_AGE,
    max_waiting: float = DEFAULT_MAX_WAITING,
) -> Verdict:
    """Healthy: rewritten within *max_age*, process alive, and not stopped nor blocked for over *max_waiting*."""
    now = time.time() if now is None else now
    command = status.get("command", "?")
    state = str(status.get("state", "?"))
    age = now - float(status["updated"])
    in_state = now - float(status.get("state_since", status["updated"]))
    counts = " ".join(f"{k}={status[k]}" for k in ("indexed", "sent", "errors", "lag") if k in status)
    detail = f"{command}: {state} for {in_state:.0f}s, updated {age:.1f}s ago{(' ' + counts) if counts else ''}"
    last_error = status.get("last_error")
    if last_error:
        detail += f"; last error: {redact(str(last_error))}"
    if age > max_age:
        return Verdict(False, f"unhealthy: not updated for {age:.0f}s (over {max_age:g}s): stuck or dead. {detail}")
    if not _alive(status):
        return Verdict(False, f"unhealthy: process {status.get('pid')} is gone. {detail}")
    if state == "stopped":
        return Verdict(False, f"unhealthy: stopped. {detail}")
    if state.startswith("waiting") and in_state > max_waiting:
        return Verdict(False, f"unhealthy: {state} for over {max_waiting:g}s. {detail}")
    return Verdict(True, f"healthy: {detail}")


def _alive(status: Mapping[str, Any]) -> bool:
    """False only when the writer ran on this host and its pid no longer exists (pids mean nothing elsewhere)."""
    pid = status.get("pid")
    if not isinstance(pid, int) or status.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
