"""The ``file`` exporter: JSON Lines on local disk, with rotation.

This is logpipe's embedded default: with no configuration at all every record
lands in ``logs/logpipe.jsonl`` under the working directory, one KafkaLog JSON
object per line, readable by ``jq``, by ``logpipe tail`` and by Filebeat.

Each batch is written with a single ``write`` on a file opened in append
mode, so lines from a forked child and its parent do not interleave mid-line.
Rotated files are renamed with a UTC timestamp (``logpipe.jsonl.20261125T103000Z``),
never renumbered, so a tailer following by inode never reads a file twice.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Literal

from ..config import at_least, setting
from ..record import Record
from .base import Exporter, ExportResult

__all__ = ["DEFAULT_PATH", "FileExporter", "FileOptions"]

#: Where records go when nothing is configured.
DEFAULT_PATH = Path("logs") / "logpipe.jsonl"


@dataclass(frozen=True)
class FileOptions:
    path: Path = setting(DEFAULT_PATH, "JSON Lines file to append to (relative to the working directory).")
    max_bytes: int = setting(
        100 * 1024 * 1024, "Rotate when the file would grow past this many bytes (0: never).", check=at_least(0)
    )
    rotate_seconds: float = setting(
        0.0, "Rotate when the file is older than this many seconds (0: never; 86400: daily).", check=at_least(0)
    )
    backups: int = setting(7, "Rotated files to keep (0: keep all).", check=at_least(0))
    fsync: Literal["never", "batch", "interval"] = setting(
        "interval", "When to fsync: never (the OS decides), batch (after every write), interval."
    )
    fsync_interval: float = setting(1.0, "Seconds between fsyncs with fsync=interval.", check=at_least(0))


class FileExporter(Exporter):
    """Appends records as JSON Lines to a local file."""

    Options = FileOptions
    options: FileOptions

    def __init__(self, options: FileOptions | None = None) -> None:
        super().__init__(options)
        self.path = Path(self.options.path)
        self._file: IO[bytes] | None = None
        self._opened_at = 0.0
        self._size = 0
        self._last_sync = float("-inf")

    def export(self, batch: Sequence[Record]) -> ExportResult:
        data = b"".join([r.payload + b"\n" for r in batch])
        handle = self._handle(len(data))
        handle.write(data)
        handle.flush()
        self._size += len(data)
        self._maybe_fsync(handle)
        return ExportResult.SUCCESS

    def force_flush(self, timeout: float = 10.0) -> bool:
        if self._file is not None:
            self._file.flush()
            if self.options.fsync != "never":
                os.fsync(self._file.fileno())
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        self.force_flush(timeout)
        if self._file is not None:
            self._file.close()
            self._file = None

    def after_fork(self) -> None:
        # The inherited descriptor shares its offset with the parent; O_APPEND
        # makes that harmless, but rotation bookkeeping restarts here.
        self._file = None

    def describe(self) -> str:
        return f"file {self.path.resolve()}"

    # -- internals ------------------------------------------------------------

    def _handle(self, incoming: int) -> IO[bytes]:
        if self._file is not None and self._should_rotate(incoming):
            self._rotate()
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open across batches
            stat = os.fstat(self._file.fileno())
            self._size = stat.st_size
            self._opened_at = stat.st_ctime if stat.st_size else time.time()
        return self._file

    def _should_rotate(self, incoming: int) -> bool:
        o = self.options
        if o.max_bytes and self._size and self._size + incoming > o.max_bytes:
            return True
        return bool(o.rotate_seconds) and time.time() - self._opened_at >= o.rotate_seconds

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        with contextlib.suppress(FileNotFoundError):  # someone else rotated or removed it
            os.rename(self.path, self.path.with_name(f"{self.path.name}.{stamp}"))
        self._prune()

    def _prune(self) -> None:
        if not self.options.backups:
            return
        rotated = sorted(self.path.parent.glob(f"{self.path.name}.*"))
        for old in rotated[: -self.options.backups]:
            old.unlink(missing_ok=True)

    def _maybe_fsync(self, handle: IO[bytes]) -> None:
        mode = self.options.fsync
        if mode == "batch":
            os.fsync(handle.fileno())
        elif mode == "interval":
            now = time.monotonic()
            if now - self._last_sync >= self.options.fsync_interval:
                os.fsync(handle.fileno())
                self._last_sync = now
