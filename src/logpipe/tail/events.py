"""Lines of one file -> events: container pieces joined, then multi-line events joined (Vector's ``line_agg``).

An `Assembler` is the state a file needs when one line is not one event: the
``P`` pieces of a CRI line or the ``\\n``-less pieces of a Docker line waiting
for their end (`logpipe.tail.container`), and the lines of a traceback
waiting for the line that begins the next event (`logpipe.tail.multiline`).
Each `Event` keeps the byte offset of its first line: that is its ``Id``
(`logpipe.tail.records`) and where the registry stays while it is incomplete
(`Assembler.start`), so a restart in the middle of an event reads it again
from its first line and builds the same record.

Files without container framing or multi-line joining have no assembler: the
harvester's fast loop makes one record per line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import container
from .multiline import Rule

__all__ = ["Assembler", "Event"]


class Event(NamedTuple):
    """What one record is made of."""

    #: Byte offset of its first line in the file.
    offset: int
    data: bytes
    #: The container runtime's time and stream of its first piece (None: not a container line).
    time: str | None
    stream: str | None
    #: ``"split"`` (a piece of an over-long line or event), ``"multiline"`` (joined lines).
    flags: tuple[str, ...]


class _Joining:
    """A multi-line event in hand."""

    __slots__ = ("lines", "offset", "size", "stream", "time", "traceback")

    def __init__(self, offset: int, line: bytes, time: str | None, stream: str | None, traceback: bool) -> None:
        self.offset, self.time, self.stream = offset, time, stream
        self.lines = [line]
        self.size = len(line)
        self.traceback = traceback


class Assembler:
    """Per file: container pieces and multi-line events in hand, fed one line at a time."""

    def __init__(self, framing: str | None, rule: Rule | None, max_bytes: int, max_line: int) -> None:
        self.frame: Callable[[bytes], container.Frame | None] | None = (
            container.cri if framing == "cri" else container.docker if framing == "docker" else None
        )
        self.rule = rule
        self.max_bytes = max_bytes
        self.max_line = max_line
        #: Pieces of a container line: offset of the first, its time and stream, the contents.
        self._pieces: list[bytes] = []
        self._pieces_at = 0
        self._pieces_size = 0
        self._pieces_meta: tuple[str | None, str | None] = (None, None)
        self._joining: _Joining | None = None

    @property
    def start(self) -> int | None:
        """Offset of the first line of what is in hand (the registry stays there); None when nothing is."""
        if self._joining is not None:
            return self._joining.offset
        return self._pieces_at if self._pieces else None

    def feed(self, line: bytes, offset: int, split: bool, out: list[Event]) -> None:
        """One line of the file (at *offset*; *split*: a piece of an over-long line); finished events to *out*."""
        if split:  # a piece of a line over max_line_bytes: no framing to read, nothing to join
            self._flush_pieces(out)
            self._flush_joining(out)
            out.append(Event(offset, line, None, None, ("split",)))
            return
        frame = self.frame(line) if self.frame is not None else None
        if frame is None:
            if self.frame is not None:
                self._flush_pieces(out)  # not a container line: kept as text, never dropped
            self._logical(offset, line, None, None, (), out)
            return
        if not self._pieces:
            self._pieces_at, self._pieces_meta = offset, (frame.time, frame.stream)
        self._pieces.append(frame.content)
        self._pieces_size += len(frame.content)
        if frame.partial and self._pieces_size < self.max_line:
            return
        self._flush_pieces(out, () if not frame.partial else ("split",))

    def flush(self, out: list[Event]) -> None:
        """Send what is in hand (the file has been quiet for multiline_timeout, or ``--once`` is at its end)."""
        self._flush_pieces(out)
        self._flush_joining(out)

    def _flush_pieces(self, out: list[Event], flags: tuple[str, ...] = ()) -> None:
        if not self._pieces:
            return
        content = b"".join(self._pieces)
        time, stream = self._pieces_meta
        self._pieces, self._pieces_size = [], 0
        self._logical(self._pieces_at, content, time, stream, flags, out)

    def _logical(
        self, offset: int, line: bytes, time: str | None, stream: str | None, flags: tuple[str, ...], out: list[Event]
    ) -> None:
        """A whole line of the program's output: an event of its own, or part of one being joined."""
        rule = self.rule
        if rule is None or flags:
            self._flush_joining(out)
            if line:
                out.append(Event(offset, line, time, stream, flags))
            return
        joining = self._joining
        if joining is not None:
            fits = joining.size + 1 + len(line) <= self.max_bytes
            if fits and rule.continues(line, joining.traceback, joining.lines[-1]):
                joining.lines.append(line)
                joining.size += 1 + len(line)
                joining.traceback = rule.traceback_after(line, joining.traceback)
                return
            self._flush_joining(out)
        if line:
            self._joining = _Joining(offset, line, time, stream, rule.traceback_after(line, False))

    def _flush_joining(self, out: list[Event]) -> None:
        joining = self._joining
        if joining is None:
            return
        self._joining = None
        lines = joining.lines
        while not lines[-1]:
            lines.pop()
        flags = ("multiline",) if len(lines) > 1 else ()
        out.append(Event(joining.offset, b"\n".join(lines), joining.time, joining.stream, flags))
