"""Search the file exporter's JSON Lines files with ``logpipe search``'s query, without a server.

The embedded default writes ``logs/logpipe.jsonl`` (and rotated siblings
``logpipe.jsonl.<UTC stamp>``); this module makes those files searchable with
the same filters as the Elasticsearch path (`Query`): free-text words of
``Msg`` that must all be present, optionally as a phrase; exact ``Type``,
``Service`` and ``TraceId``; an event-time range.

Words are cut as Elasticsearch's ``standard`` analyzer (logpipe's default)
cuts them (`words`): runs of letters and digits, lower-cased, joined across
``.``, ``'`` and, between digits, ``,``; every CJK ideograph and kana is a
word of its own. So ``密码`` finds ``密码错误`` here as it does there (both
characters are present), with the same false hits (``码错``).

Files are streamed line by line, never loaded: memory stays bounded by the
``--size`` newest matches kept. A cheap byte test rejects most lines before
JSON parsing (see `Query.maybe`); the speed is in ``docs/elasticsearch.md``.
"""

from __future__ import annotations

import glob
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

__all__ = ["FileFollower", "Query", "default_files", "parse_bound", "record_time", "search_files", "words"]

# Characters that are one word each in the standard tokenizer (UAX #29 word breaks): CJK ideographs
# (with extensions and compatibility forms), hiragana. Katakana and hangul runs stay words.
_IDEOGRAPHIC = (
    "\u3005\u3007\u3021-\u3029\u3038-\u303b\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0002fa1f\U00030000-\U0003134f"
)
_LETTER = rf"[^\W\d_{_IDEOGRAPHIC}]"
# Pictographs (emoji and symbols): one word each, as Lucene's tokenizer emits <EMOJI> tokens.
_EMOJI = "\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff"
# A word: letters/digits/underscores (underscore joins, as UAX #29's ExtendNumLet), and inside it
# '.', ':' or an apostrophe between two letters, '.', ',', ';' or an apostrophe between two digits.
_WORD = re.compile(
    rf"[{_IDEOGRAPHIC}{_EMOJI}]"
    rf"|(?:{_LETTER}|\d|_)+(?:(?:(?<={_LETTER})['’.:](?={_LETTER})|(?<=\d)['’.,;](?=\d))(?:{_LETTER}|\d|_)+)*"
)


def words(text: str) -> list[str]:
    """*text* cut into lower-cased words as the ``standard`` analyzer cuts it (see the module docstring)."""
    return [w.lower() for w in _WORD.findall(text) if w.strip("_")]


def parse_bound(value: str, flag: str, now: datetime | None = None) -> datetime:
    """``15m`` (back from now), ``now``, ``now-2h`` or an ISO 8601 time -> an aware datetime.

    Raises ValueError naming *flag* for Elasticsearch date math the files
    cannot do (``now-1d/d``): rounding needs a server.
    """
    now = now or datetime.now(timezone.utc)
    text = value.strip()
    match = re.fullmatch(r"(?:now\s*-\s*)?(\d+)\s*([smhdw])", text)
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
        return now - timedelta(**{unit: int(match.group(1))})
    if text == "now":
        return now
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{flag} {value!r}: searching files understands a duration (15m), now-15m or an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def record_time(value: Any) -> datetime | None:
    """A record's ``Time`` as an aware datetime (offset-less means UTC, as Elasticsearch reads it)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, timezone.utc)  # epoch_millis, as the template accepts
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Query:
    """What ``logpipe search`` asks for, in the form the files are checked against."""

    text: str | None = None
    phrase: bool = False
    since: datetime | None = None
    until: datetime | None = None
    levels: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    trace_id: str | None = None
    _words: list[str] = field(init=False, default_factory=list)
    _needles: list[bytes] = field(init=False, default_factory=list)
    _caseless: list[bytes] = field(init=False, default_factory=list)
    _values: list[list[bytes] | None] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._words = words(self.text or "")
        # Byte tests every matching line passes (see `maybe`). Words with letter case are tested
        # against the lower-cased line, so only ASCII ones (bytes.lower() folds ASCII only); caseless
        # words (CJK, digits) as their UTF-8 bytes, unless the line \u-escapes (json.dumps' default).
        unique = list(dict.fromkeys(self._words))
        self._needles = [w.encode() for w in unique if w.isascii()]
        self._caseless = [w.encode() for w in unique if not w.isascii() and w.lower() == w.upper()]
        self._values = [_json_strings(v) for v in (self.levels, self.services) if v]
        if self.trace_id:
            self._values.append(_json_strings((self.trace_id,)))

    def maybe(self, data: bytes) -> bool:
        """False when no line of *data* (one line or a block of them) can match: cheap, no JSON parsing."""
        for alternatives in self._values:
            if alternatives is not None and not any(a in data for a in alternatives):
                return False
        if self._caseless and b"\\u" not in data and not all(n in data for n in self._caseless):
            return False
        if self._needles:
            lowered = data.lower()
            if not all(n in lowered for n in self._needles):
                return False
        return True

    def matches(self, doc: Mapping[str, Any]) -> bool:
        if self.levels and doc.get("Type") not in self.levels:
            return False
        if self.services and doc.get("Service") not in self.services:
            return False
        if self.trace_id and doc.get("TraceId") != self.trace_id:
            return False
        if self.since or self.until:
            moment = record_time(doc.get("Time"))
            if moment is None:
                return False
            if (self.since and moment < self.since) or (self.until and moment > self.until):
                return False
        if self._words:
            found = words(str(doc.get("Msg", "")))
            if self.phrase:
                return _contains(found, self._words)
            return set(self._words) <= set(found)
        return True


def _json_strings(values: tuple[str, ...]) -> list[bytes] | None:
    """``"value"`` as it appears in compact JSON, for each value; None when one may be escaped there."""
    out = []
    for value in values:
        if not value.isascii() or any(c in value for c in '"\\/') or not value.isprintable():
            return None
        out.append(orjson.dumps(value))
    return out


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def default_files(path: Path) -> str:
    """The glob of the file exporter's file *path* and its rotated siblings (``<name>.<stamp>``)."""
    return f"{glob.escape(str(path))}*"


def ordered(pattern: str) -> list[Path]:
    """Regular files matching *pattern*, oldest first (by modification time, then name).

    Rotated files are renamed, never rewritten, so their modification time
    is when they stopped growing: this is the order their records were written.
    """
    found = []
    for name in glob.glob(pattern, recursive=True):
        try:
            st = os.stat(name)
        except OSError:
            continue
        if os.path.isfile(name) and not name.endswith((".offset", ".tmp")):
            found.append((st.st_mtime_ns, name))
    return [Path(name) for _, name in sorted(found)]


#: Bytes read at once: big enough that the byte tests skip whole blocks, small enough to stay in cache.
BLOCK_BYTES = 1 << 20


@dataclass
class _Position:
    path: Path
    offset: int


class FileFollower:
    """Reads the files of a glob, remembering how far each was read (by inode, as `logpipe tail` does).

    `scan` reads every file to its end once; `poll` afterwards returns only
    what was appended since, including files that appear later (a rotation
    renames the old file, keeping its inode, and creates a new one, which
    is read from its start). An incomplete last line is left for the next
    poll: the writer is in the middle of it.
    """

    def __init__(self, pattern: str, query: Query) -> None:
        self.pattern = pattern
        self.query = query
        self.positions: dict[tuple[int, int], _Position] = {}
        self.lines = 0
        self.bytes = 0

    def scan(self) -> Iterator[dict[str, Any]]:
        """Every matching record of the files, file by file, line by line."""
        for path in ordered(self.pattern):
            yield from self._read(path)

    def poll(self) -> list[dict[str, Any]]:
        """Matching records appended since the last `scan` or `poll`."""
        out: list[dict[str, Any]] = []
        for path in ordered(self.pattern):
            out.extend(self._read(path))
        return out

    def _read(self, path: Path) -> Iterator[dict[str, Any]]:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return
        with handle:
            st = os.fstat(handle.fileno())
            key = (st.st_dev, st.st_ino)
            position = self.positions.get(key)
            start = position.offset if position is not None else 0
            if start > st.st_size:  # truncated: read again from the start
                start = 0
            if start == st.st_size:
                self.positions[key] = _Position(path, start)
                return
            handle.seek(start)
            offset = start
            maybe, matches = self.query.maybe, self.query.matches
            carry = b""
            while block := handle.read(BLOCK_BYTES):
                block = carry + block
                end = block.rfind(b"\n") + 1
                carry = block[end:]  # an incomplete last line is being written: next poll
                if not end:
                    continue
                offset += end
                complete = block[:end]
                self.lines += complete.count(b"\n")
                if not maybe(complete):
                    continue  # no line of this block can match: most blocks of a selective search
                for line in complete.split(b"\n")[:-1]:
                    if not maybe(line):
                        continue
                    try:
                        doc = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(doc, dict) and matches(doc):
                        yield doc
            self.bytes += offset - start
            self.positions[key] = _Position(path, offset)


def search_files(pattern: str, query: Query, size: int) -> tuple[list[dict[str, Any]], int, FileFollower]:
    """The newest *size* matches of *query* in the files of *pattern* (oldest first), the number of
    matches, and the follower positioned at the files' ends (for ``--follow``)."""
    follower = FileFollower(pattern, query)
    newest: deque[dict[str, Any]] = deque(maxlen=size)
    total = 0
    for doc in follower.scan():
        newest.append(doc)
        total += 1
    return sorted(newest, key=_order), total, follower


def _order(doc: Mapping[str, Any]) -> tuple[float, str]:
    """Time, then Id: the order ``--follow`` uses on Elasticsearch too."""
    moment = record_time(doc.get("Time"))
    return (moment.timestamp() if moment else 0.0, str(doc.get("Id", "")))


def sort_docs(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=_order)
