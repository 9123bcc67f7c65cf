"""The wire protocol between a `ProcessExporter` and its child: frames on a pipe.

A frame is a header (kind, sequence number, body length) and a body. The
parent sends HELLO (the exporter's class and options, pickled), BATCH,
FLUSH, STATS and CLOSE; the child answers each with the same sequence
number (READY or REFUSED, RESULT, FLUSHED, STATS_OF, CLOSED), in the order
asked. A batch travels as ``marshal`` of its columns, one plain tuple per
`Record` field (about 80 us per 512 records, in C, holding the
application's GIL: marshal refuses named tuples, and transposing with
``zip`` is cheaper than a ``tuple()`` per record).
"""

from __future__ import annotations

import marshal
import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from ..durable import write_all
from ..record import Record
from .base import ExportResult, PartialFailure

__all__ = [
    "BATCH",
    "CLOSE",
    "CLOSED",
    "FLUSH",
    "FLUSHED",
    "HELLO",
    "READY",
    "REFUSED",
    "RESULT",
    "STATS",
    "STATS_OF",
    "decode_batch",
    "decode_outcome",
    "encode_batch",
    "encode_outcome",
    "read_frames",
    "take_frames",
    "write",
]

HEADER = struct.Struct("!BQI")  # kind, sequence number, body length

# Parent -> child.
HELLO, BATCH, FLUSH, CLOSE, STATS = 1, 2, 3, 4, 5
# Child -> parent.
READY, REFUSED, RESULT, FLUSHED, CLOSED, STATS_OF = 11, 12, 13, 14, 15, 16
#: marshal format 2 for record batches: formats 3+ look every object up in a table of
#: references (to share repeated ones), which doubled the time a batch holds the GIL.
_BATCH_FORMAT = 2

_SUCCESS, _FAILURE, _PARTIAL = 0, 1, 2


def encode_batch(batch: Sequence[Record]) -> bytes:
    """The body of a BATCH frame: the batch's columns."""
    return marshal.dumps(list(zip(*batch, strict=True)), _BATCH_FORMAT)


def decode_batch(body: bytes) -> list[Record]:
    return [Record(*fields) for fields in zip(*marshal.loads(body), strict=True)]


def encode_outcome(batch: Sequence[Record], result: Any) -> bytes:
    """The body of a RESULT frame: a code, and the failed records' positions in the batch."""
    if result is ExportResult.SUCCESS:
        return marshal.dumps((_SUCCESS, []))
    if isinstance(result, PartialFailure):
        index = {r.id: i for i, r in enumerate(batch)}
        return marshal.dumps((_PARTIAL, [index[r.id] for r in result.failed if r.id in index]))
    return marshal.dumps((_FAILURE, []))


def decode_outcome(body: bytes, batch: Sequence[Record]) -> ExportResult | PartialFailure:
    code, failed = marshal.loads(body)
    if code == _SUCCESS:
        return ExportResult.SUCCESS
    if code == _PARTIAL:
        return PartialFailure([batch[i] for i in failed])
    return ExportResult.FAILURE


def read_frames(fd: int) -> Iterator[tuple[int, int, bytes]]:
    """Yield (kind, seq, body) frames read from *fd* until end of input."""
    buffer = bytearray()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return
        buffer += chunk
        yield from take_frames(buffer)


def take_frames(buffer: bytearray) -> list[tuple[int, int, bytes]]:
    """Remove the complete frames at the start of *buffer* and return them as (kind, seq, body)."""
    frames = []
    start = 0
    while len(buffer) - start >= HEADER.size:
        kind, seq, size = HEADER.unpack_from(buffer, start)
        end = start + HEADER.size + size
        if len(buffer) < end:
            break
        frames.append((kind, seq, bytes(buffer[start + HEADER.size : end])))
        start = end
    del buffer[:start]
    return frames


def write(fd: int, kind: int, seq: int, body: bytes) -> None:
    write_all(fd, HEADER.pack(kind, seq, len(body)) + body)
