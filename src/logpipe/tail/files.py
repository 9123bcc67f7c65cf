"""The files being followed: what a scan found -> harvesters opened, marked moved, closed; their registry entries.

Between `paths.scan` (which files match now), `fingerprint` (is this the file
the registry knew?) and `checkpoint.Registry` (how far each file is
acknowledged) sits the bookkeeping of the open set: where a newly matched
file starts, when a renamed or removed file counts as moved (rotated), when
an idle or finished file is closed, and keeping the registry's entries in
step with the harvesters' committed offsets.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from .checkpoint import Registry, RegistryEntry
from .fingerprint import Key, grown_head, key_of, same_head
from .harvester import Harvester
from .options import ENV_PREFIX, TailOptions
from .paths import scan
from .records import RecordMaker
from .stats import TailStats

__all__ = ["Files"]


class Files:
    """The open `Harvester` of every followed file, and the registry they report to."""

    def __init__(
        self, options: TailOptions, registry: Registry, stats: TailStats, error: Callable[[str], None]
    ) -> None:
        self.options = options
        self.registry = registry
        self.stats = stats
        self.error = error
        self.open: dict[Key, Harvester] = {}
        #: Committed offsets moved (or entries changed) since the registry was last written.
        self.dirty = False
        self._saved_at: float | None = None
        self._first_scan = True
        self._own = {os.path.abspath(options.registry), os.path.abspath(options.dead_letter)}
        self.maker = RecordMaker.from_options(options)

    # -- what is open -------------------------------------------------------------------

    def scan(self) -> None:
        """Match the patterns: open new and grown files, notice rotated and removed ones."""
        seen = scan(self.options.paths, self._own)
        for key, h in self.open.items():
            now_at = seen.get(key)
            if now_at != h.path:  # renamed or removed: the writer has moved on to another file
                if not h.moved:
                    h.moved = True
                    self.stats.rotations += 1
                if now_at is not None:
                    h.path = now_at
        for key, path in seen.items():
            if key not in self.open:
                self._maybe_open(key, path)
        for key in [k for k in self.registry.entries if k not in seen and k not in self.open]:
            del self.registry.entries[key]  # gone from every pattern: forget it
            self.dirty = True
        self._first_scan = False
        self.stats.files_open = len(self.open)

    def _maybe_open(self, key: Key, path: str) -> None:
        """Open *path* unless the registry says it is done and unchanged; start where the registry says."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            self.error(f"cannot open {path}: {exc}")
            return
        try:
            start = self._start(key, path, fd)
        except OSError as exc:
            os.close(fd)
            self.error(f"{path}: {exc}")
            return
        if start is None:
            os.close(fd)
            return
        offset, head = start
        self.open[key] = Harvester(key, path, fd, offset, head, self.maker)
        entry = self.registry.entries.get(key)
        if entry is None or entry.offset != offset or entry.path != path:
            self.registry.entries[key] = RegistryEntry(key[0], key[1], path, offset, head[0], head[1])
            self.dirty = True

    def _start(self, key: Key, path: str, fd: int) -> tuple[int, tuple[int, int]] | None:
        """(offset, head) to read *fd* from; None to leave it closed (replaced since the scan, or nothing new)."""
        st = os.fstat(fd)
        if key_of(st) != key:  # replaced between stat and open: next scan
            return None
        entry = self.registry.entries.get(key)
        if entry is None:
            at_end = self._first_scan and self.options.start == "end"
            return (st.st_size if at_end else 0), (0, 0)
        if not same_head(fd, (entry.head, entry.head_len)):
            self.error(f"{path}: not the file the registry knew under this inode; reading it from the start")
            return 0, (0, 0)  # a reused inode or a file rewritten while we were away
        if st.st_size < entry.offset:
            self.stats.truncations += 1
            return 0, (0, 0)
        if st.st_size == entry.offset and entry.path == path:
            return None  # nothing new: stay closed until it grows
        return entry.offset, (entry.head, entry.head_len)

    def close_idle(self, once: bool, busy: Callable[[Key], bool]) -> None:
        """Close files that are done: moved and quiet for close_rotated, or quiet for close_inactive.

        *busy* tells a file with lines in a batch not yet committed (kept open
        so its acknowledgement still lands on its harvester).
        """
        now = time.monotonic()
        for key, h in list(self.open.items()):
            if not h.done or busy(key):
                continue
            quiet = now - h.last_data
            moved_done = h.moved and (once or quiet >= self.options.close_rotated) and not h.partial
            if moved_done or (not h.moved and quiet >= self.options.close_inactive and not once):
                self._update_entry(h)
                os.close(h.fd)
                del self.open[key]
        self.stats.files_open = len(self.open)

    def close_all(self) -> None:
        for h in self.open.values():
            with contextlib.suppress(OSError):
                os.close(h.fd)
        self.open.clear()
        self.stats.files_open = 0

    # -- the registry -------------------------------------------------------------------

    def commit(self, h: Harvester, generation: int, end: int) -> None:
        """Lines of *h* up to *end* are acknowledged (unless the file was truncated since they were read)."""
        if h.generation == generation and end > h.committed:
            h.committed = end
            self.dirty = True

    def _update_entry(self, h: Harvester) -> None:
        with contextlib.suppress(OSError):
            h.head = grown_head(h.fd, h.head, h.committed)
        entry = self.registry.entries.get(h.key)
        if entry is None:
            self.registry.entries[h.key] = RegistryEntry(h.key[0], h.key[1], h.path, h.committed, *h.head)
            return
        entry.path, entry.offset = h.path, h.committed
        entry.head, entry.head_len = h.head

    def save(self, force: bool = False) -> None:
        """Write the registry when progress was made, at most every registry_flush seconds (unless *force*)."""
        now = time.monotonic()
        recent = self._saved_at is not None and now - self._saved_at < self.options.registry_flush
        if not self.dirty or (not force and recent):
            return
        for h in self.open.values():
            self._update_entry(h)
        try:
            self.registry.save()
        except OSError as exc:
            self.error(f"cannot write the registry {self.registry.path} ({ENV_PREFIX}REGISTRY): {exc}")
            return
        self.dirty = False
        self._saved_at = now
