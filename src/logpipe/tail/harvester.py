"""Reading one file: blocks of bytes -> lines -> records, with partial lines, long-line splitting and truncation.

Vector's ``file_watcher``. A `Harvester` owns one open descriptor and three
offsets: ``committed`` (what Kafka acknowledged: the registry's offset),
``pos`` (the start of the next line to hand out) and ``read_to`` (how far the
file has been read; the lines and the partial line held lie between ``pos``
and ``read_to``). It reads a block at a time with ``pread`` (so a rename or a
concurrent writer never moves its position) and keeps the lines of the block
until the tailer takes them.

`Harvester.take` is the hot path of ``logpipe tail``: one loop over the lines
held, with nothing per line but the recognition of the line (a first byte
that is not ``{`` is text: no JSON parse; else `kafkalog_record`'s test, then
another program's format) and two list appends. Keep it that way
(bench/tail_throughput.py measures it). A file whose lines are not each one
event (container framing, multi-line joining) takes the other loop, through
its `Assembler`; the offset it reports for the registry (`Harvester.mark`)
then stays at the first line of the event in hand.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .. import ingress
from ..record import Record
from . import container
from .events import Assembler, Event
from .fingerprint import Head, Key
from .records import RecordMaker, file_ids, wrap_line
from .stats import TailStats

__all__ = ["CHUNK", "Harvester"]

#: Bytes read from a file at a time.
CHUNK = 1 << 20


class Harvester:
    """One open file: what has been read, what is acknowledged, the lines not yet batched."""

    def __init__(self, key: Key, path: str, fd: int, offset: int, head: Head, maker: RecordMaker | None = None) -> None:
        self.key = key
        self.path = path
        self.fd = fd
        #: Acknowledged offset (what the registry says) and the offset of the next line to batch.
        self.committed = offset
        self.pos = offset
        #: Bytes read so far (pos plus the lines and partial line held).
        self.read_to = offset
        self.head = head
        #: Bumped by truncation: acknowledgements of lines read before it no longer count.
        self.generation = 0
        self.lines: list[bytes] = []
        self.index = 0
        #: Line index -> bytes of the file it stands for, for pieces of split lines (no newline of their own);
        #: negative for a whole last line without a newline.
        self.pieces: dict[int, int] = {}
        self.partial = b""
        #: The partial line continues a line that was split (its remainder is a piece too).
        self.continued = False
        #: Renamed or removed away from its pattern: the writer has moved on.
        self.moved = False
        self.last_data = time.monotonic()
        self.at_eof = False
        self.maker = RecordMaker() if maker is None else maker
        #: The format forced for this file (LOGPIPE_TAIL_FORMATS), else auto.
        self.format = self.maker.format_for(path)
        #: JSON may be recognised (not the plain format).
        self.parse = self.format != "plain"
        #: Container framing still to be told from the first line (auto format only).
        self.sniffing = self.format == "auto"
        self.assembler = self._assembler()
        #: What is in hand must be sent now (quiet for multiline_timeout, or --once at the end).
        self.flush_due = False
        self._ids: Callable[[object], str] | None = None

    def _assembler(self) -> Assembler | None:
        framing = self.format if self.format in ("cri", "docker") else None
        return self.maker.assembler(framing)

    def has_lines(self) -> bool:
        return self.index < len(self.lines) or self.flush_due

    @property
    def mark(self) -> int:
        """Where the registry may move to: past the lines handed out, but not into an event still in hand."""
        if self.assembler is not None:
            start = self.assembler.start
            if start is not None:
                return start
        return self.pos

    def quiet(self) -> float:
        """Seconds since data was last read from the file."""
        return time.monotonic() - self.last_data

    @property
    def holding(self) -> bool:
        """Lines of an incomplete event (container pieces, a multi-line event) are in hand."""
        return self.assembler is not None and self.assembler.start is not None

    def ids(self) -> Callable[[object], str]:
        """``offset -> Id`` of the records built from this file (`file_ids`)."""
        if self._ids is None:
            try:
                self._ids = file_ids(self.fd, self.key, self.maker.id_head)
            except OSError:  # not seen in practice (the file is open); ids without the head then
                self._ids = file_ids(-1, self.key, 0)
        return self._ids

    @property
    def done(self) -> bool:
        """Everything read was handed out and acknowledged, and the file is at its end (for now)."""
        return self.at_eof and not self.has_lines() and not self.holding and self.committed >= self.pos

    def read(self, max_line: int, stats: TailStats) -> bool:
        """Read the next block into lines; False at the end of the file (for now). Raises `OSError`."""
        if self.lines and self.index >= len(self.lines):
            self.lines, self.index, self.pieces = [], 0, {}
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            size = self.read_to
        if size < self.read_to:  # truncated: whatever was held is gone from the file
            stats.truncations += 1
            self._restart()
        if size == self.read_to:
            self.at_eof = True
            return False
        chunk = os.pread(self.fd, min(CHUNK, size - self.read_to), self.read_to)
        if not chunk:
            self.at_eof = True
            return False
        self.at_eof = False
        self.last_data = time.monotonic()
        self.read_to += len(chunk)
        stats.bytes_read += len(chunk)
        if self.partial:
            chunk = self.partial + chunk
        lines = chunk.split(b"\n")
        self.partial = lines.pop()
        if self.continued and lines:
            self.pieces[len(self.lines)] = len(lines[0]) + 1
            self.continued = False
        if len(self.partial) > max_line or any(len(line) > max_line for line in lines):
            lines = self._split_long(lines, max_line, stats)
        self.lines.extend(lines)
        return True

    def _restart(self) -> None:
        """The file was truncated: start again from its first byte, a new generation of offsets."""
        self.generation += 1
        self.pos = self.committed = self.read_to = 0
        self.lines, self.index, self.pieces, self.partial, self.continued = [], 0, {}, b"", False
        self.head = (0, 0)
        self.sniffing = self.format == "auto"
        self.assembler = self._assembler()
        self.flush_due = False
        self._ids = None

    def _split_long(self, lines: list[bytes], max_line: int, stats: TailStats) -> list[bytes]:
        """Cut lines (and the partial one) longer than *max_line* into pieces, marking them."""
        out: list[bytes] = []
        base = len(self.lines)
        for line in lines:
            index = base + len(out)
            carried = self.pieces.pop(index, None)
            if len(line) <= max_line:
                if carried is not None:
                    self.pieces[index] = carried
                out.append(line)
                continue
            if carried is None:
                stats.too_long += 1
            for start in range(0, len(line), max_line):
                piece = line[start : start + max_line]
                last = start + max_line >= len(line)
                self.pieces[base + len(out)] = len(piece) + (1 if last else 0)
                out.append(piece)
        while len(self.partial) > max_line:
            if not self.continued:
                stats.too_long += 1
            piece, self.partial = self.partial[:max_line], self.partial[max_line:]
            self.pieces[base + len(out)] = len(piece)
            out.append(piece)
            self.continued = True
        return out

    def flush_partial(self) -> bool:
        """Turn an incomplete last line into a line (the file is done); True when there was one."""
        if not self.partial:
            return False
        if self.continued:
            self.pieces[len(self.lines)] = len(self.partial)
            self.continued = False
        else:
            self.pieces[len(self.lines)] = -len(self.partial)  # negative: a whole line without newline
        self.lines.append(self.partial)
        self.partial = b""
        return True

    def take(self, limit: int, budget: int, out: list[Record], offsets: list[int], stats: TailStats) -> tuple[int, int]:
        """Append records of up to *limit* lines / *budget* bytes to *out*; (lines taken, bytes taken).

        *offsets* gets, in step with *out*, the byte offset in this file of
        the line (or piece, or first line of a joined event) each record was
        made of: its ``Id`` and where a dead letter came from.
        """
        if self.sniffing:
            self._sniff()
        if self.assembler is not None:
            return self._take_events(limit, budget, out, offsets, stats)
        lines = self.lines
        start = self.index
        stop = min(len(lines), start + limit)
        taken = 0
        pos = self.pos
        pieces = self.pieces
        path = self.path
        append = out.append
        mark = offsets.append
        maker = self.maker
        service = maker.service
        parse = self.parse
        kafkalog = ingress.kafkalog
        received = time.time()  # Record.ts of a KafkaLog line: when it was taken (the Kafka path never reads it)
        ids = self.ids() if stop > start else str
        wrapped = parsed = empty = 0
        k = start
        while k < stop:
            line = lines[k]
            size = len(line)
            if taken + size > budget and k > start:
                break
            taken += size
            consumed = size + 1
            split = False
            if pieces and k in pieces:
                consumed = pieces[k]
                if consumed < 0:
                    consumed = -consumed
                else:
                    split = True
            if size and line[-1] == 13:  # CR of a CRLF line (bytes indexed: an int, cheaper than a slice)
                line = line[:-1]
            if not line:
                empty += 1
            else:
                record = None
                if parse and not split and line[0] == 123:  # "{": text never pays for a JSON parse
                    record = kafkalog(line, received)  # kafkalog_record without a call and a clock read
                    if record is None:
                        record = maker.foreign(line, path, pos, ids(pos))
                        parsed += record is not None
                if record is None:
                    record = wrap_line(
                        line, path, pos, service=service, split=split, record_id=ids(pos), redactor=maker.redactor
                    )
                    wrapped += 1
                append(record)
                mark(pos)
            pos += consumed
            k += 1
        stats.lines_read += k - start
        stats.wrapped += wrapped
        stats.parsed += parsed
        stats.empty += empty
        self.index = k
        self.pos = pos
        return k - start, taken

    def _sniff(self) -> None:
        """Auto format: the first non-empty line tells a container log (CRI, Docker json-file) from any other."""
        for line in self.lines[self.index :]:
            if line:
                framing = container.sniff(line.rstrip(b"\r"))
                if framing is not None:
                    self.assembler = self.maker.assembler(framing)
                self.sniffing = False
                return

    def _take_events(
        self, limit: int, budget: int, out: list[Record], offsets: list[int], stats: TailStats
    ) -> tuple[int, int]:
        """`take` for files whose events span lines: each line through the `Assembler`, finished events to records."""
        assembler = self.assembler
        assert assembler is not None
        lines = self.lines
        start = self.index
        stop = min(len(lines), start + limit)
        taken = 0
        pos = self.pos
        pieces = self.pieces
        events: list[Event] = []
        empty = 0
        k = start
        while k < stop:
            line = lines[k]
            size = len(line)
            if taken + size > budget and k > start:
                break
            taken += size
            consumed = size + 1
            split = False
            if pieces and k in pieces:
                consumed = pieces[k]
                if consumed < 0:
                    consumed = -consumed
                else:
                    split = True
            if line[-1:] == b"\r":
                line = line[:-1]
            empty += not line
            assembler.feed(line, pos, split, events)
            pos += consumed
            k += 1
        if self.flush_due and k == len(lines):
            assembler.flush(events)
            self.flush_due = False
        stats.lines_read += k - start
        stats.empty += empty
        self.index = k
        self.pos = pos
        if events:
            self._build(events, out, offsets, stats)
        return k - start, taken

    def _build(self, events: list[Event], out: list[Record], offsets: list[int], stats: TailStats) -> None:
        ids = self.ids()
        maker, path, parse = self.maker, self.path, self.parse
        for event in events:
            record, how = maker.event(event, path, ids, parse)
            out.append(record)
            offsets.append(event.offset)
            if how == 1:
                stats.parsed += 1
            elif how == 2:
                stats.wrapped += 1
            if "multiline" in event.flags:
                stats.joined += 1
