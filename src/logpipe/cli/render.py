"""How ``logpipe search`` shows a KafkaLog record to a person, a pipe, or a template.

Kept apart from the command so it can be tested alone at any width. Three
layouts, one record per line each:

* `Renderer` for people: ``time LEVEL service func  message key=value ...``.
  On a terminal the line is wrapped to the width with a hanging indent, so
  the message is never cut (the old table squeezed it to nothing at 80
  columns) and wide characters (Chinese, emoji) are measured in terminal
  cells, not code points (``rich.cells``). Not on a terminal: the same text,
  one physical line per record, no colour, no wrapping.
* ``--json``: the record as it was stored, one JSON object per line.
* ``--format``: a `Template` of KafkaLog keys, ``{Time} {Type} {Msg}``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

import orjson
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

__all__ = ["LEVEL_STYLES", "Renderer", "Template", "field_text", "short_time"]

#: Colour of each level (``Type``); anything else is shown unstyled.
LEVEL_STYLES = {
    "debug": "dim",
    "info": "green",
    "warning": "yellow",
    "warn": "yellow",
    "error": "red",
    "critical": "bold red",
    "fatal": "bold red",
    "exception": "red",
}

#: Cells the level takes; the two longer common levels are shortened to fit (`LEVEL_NAMES`).
LEVEL_CELLS = 5
LEVEL_NAMES = {"warning": "WARN", "critical": "CRIT"}
#: Continuation lines start this many cells in when the message column would be too narrow.
INDENT = 2
#: Fewest cells of the message column worth indenting continuation lines for.
MIN_BODY = 24


def short_time(text: str, today: date | None = None) -> str:
    """The record's ``Time`` in the viewer's local time: ``HH:MM:SS.mmm`` today, ``YYYY-MM-DD HH:MM:SS`` before.

    Why local and short: the reader compares it with the clock on their
    wall, and at 60 columns every cell the time does not take is one more
    for the message. Text that is not a time is shown as it is.
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return str(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # as Elasticsearch reads an offset-less time
    local = moment.astimezone()
    if local.date() == (today or date.today()):
        return f"{local:%H:%M:%S}.{local.microsecond // 1000:03d}"
    return f"{local:%Y-%m-%d %H:%M:%S}"


def _value_text(value: Any) -> str:
    """A ``Field`` value as logfmt shows it: bare when it can be, else a JSON string (newlines escaped)."""
    if isinstance(value, str):
        if value and not any(c in value for c in ' "=\n\r\t'):
            return value
        return orjson.dumps(value).decode()
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def field_text(fields: Any) -> str:
    """``Field`` as ``key=value`` pairs (logfmt); a Field that is not an object is shown as JSON."""
    if not fields:
        return ""
    if not isinstance(fields, Mapping):
        return _value_text(fields)
    return " ".join(f"{key}={_value_text(value)}" for key, value in fields.items())


class Renderer:
    """Prints records for people on *console*: wrapped and coloured on a terminal, one plain line otherwise."""

    def __init__(self, console: Console, *, wrap: bool | None = None) -> None:
        self.console = console
        #: Wrap to the width (a terminal) or write each record as one line (a pipe, a file).
        self.wrap = console.is_terminal if wrap is None else wrap

    def head(self, doc: Mapping[str, Any]) -> Text:
        """Time and level: a fixed-width column, so the messages of consecutive records line up."""
        kind = str(doc.get("Type", "") or "")
        level = LEVEL_NAMES.get(kind.lower(), kind.upper())
        head = Text()
        head.append(short_time(str(doc.get("Time", ""))), style="dim")
        head.append(" ")
        head.append(level + " " * max(0, LEVEL_CELLS - cell_len(level)), style=LEVEL_STYLES.get(kind.lower(), ""))
        head.append(" ")
        return head

    def body(self, doc: Mapping[str, Any], *, blocks: bool = False) -> Text:
        """Service, function, message and fields: the part that wraps.

        With *blocks*, fields whose value spans lines (a traceback) are left
        out: `lines` shows them below the record, line by line.
        """
        body = Text()
        for key, style in (("Service", "cyan"), ("FuncName", "blue")):
            value = str(doc.get(key, "") or "")
            if value:
                body.append(value, style=style)
                body.append(" ")
        body.append(_one_line(str(doc.get("Msg", ""))), style="bold")
        fields = field_text(_inline(doc.get("Field")) if blocks else doc.get("Field"))
        if fields:
            body.append("  ")
            body.append(fields, style="dim")
        return body

    def text(self, doc: Mapping[str, Any]) -> Text:
        """One record as a single styled line, before any wrapping."""
        return self.head(doc) + self.body(doc)

    def lines(self, doc: Mapping[str, Any], width: int) -> list[Text]:
        """*doc* wrapped to *width* cells, continuation lines indented under the message column.

        Below `MIN_BODY` cells for the message column (very narrow
        terminals) the continuation lines start at the left edge instead.
        """
        head, body = self.head(doc), self.body(doc, blocks=True)
        indent = head.cell_len
        if width - indent < MIN_BODY:
            indent = INDENT
            first_width = max(1, width - head.cell_len)
            first, *_ = body.wrap(self.console, first_width, overflow="fold") or [Text("")]
            rest_text = body[len(first.plain) :]
            rest_text = rest_text[len(rest_text.plain) - len(rest_text.plain.lstrip(" ")) :]
            rest = (
                list(rest_text.wrap(self.console, max(1, width - indent), overflow="fold")) if rest_text.plain else []
            )
            pieces = [first, *rest]
        else:
            pieces = list(body.wrap(self.console, width - indent, overflow="fold")) or [Text("")]
        pad = Text(" " * indent)
        lines = [head + pieces[0], *(pad + piece for piece in pieces[1:])]
        for key, value in _blocks(doc.get("Field")):
            lines.append(pad + Text(f"{key}:", style="dim"))
            for raw in value.splitlines():
                block = Text(raw.expandtabs(4), style="dim")
                lines.extend(
                    pad + Text("  ") + piece
                    for piece in block.wrap(self.console, max(1, width - indent - 2), overflow="fold")
                )
        return lines

    def print(self, doc: Mapping[str, Any]) -> None:
        if not self.wrap:
            self.console.print(self.text(doc), soft_wrap=True, highlight=False, crop=False)
            return
        for line in self.lines(doc, self.console.width):
            self.console.print(line, soft_wrap=True, highlight=False)


def _inline(fields: Any) -> Any:
    """*fields* without its multi-line string values (see `_blocks`)."""
    if not isinstance(fields, Mapping):
        return fields
    return {k: v for k, v in fields.items() if not (isinstance(v, str) and "\n" in v.rstrip("\n"))}


def _blocks(fields: Any) -> list[tuple[str, str]]:
    """The multi-line string values of *fields* (tracebacks), shown as indented blocks on a terminal."""
    if not isinstance(fields, Mapping):
        return []
    return [(str(k), v.rstrip("\n")) for k, v in fields.items() if isinstance(v, str) and "\n" in v.rstrip("\n")]


def _one_line(message: str) -> str:
    """A message with its line breaks shown as ``\\n``, so one record stays one line (grep, sort, wc -l)."""
    if "\n" not in message and "\r" not in message:
        return message
    return message.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


class _Blank(dict):  # type: ignore[type-arg]
    """A mapping whose missing keys are empty, so ``{Field[user]}`` on a record without it prints nothing."""

    def __missing__(self, key: str) -> str:
        return ""


class Template:
    """``--format``: a `str.format` template over a record's KafkaLog keys.

    ``{Time} {Type} {Service} {Msg}``; ``{Field}`` is the fields as
    ``key=value``, ``{Field[user]}`` one of them; ``{Fields}`` is ``Field``
    as JSON; ``{Time:.19}`` and other format specs work as in Python. A key
    the record lacks prints as nothing. Checked once, at start, so a typo
    fails before any output.
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec.replace("\\t", "\t")
        sample = {"Type": "info", "Time": "", "Msg": "", "Field": {"k": 1}}
        try:
            for _, name, _, _ in string.Formatter().parse(self.spec):
                if name is not None and name.strip() == "":
                    raise ValueError("empty {} (name a KafkaLog key: {Time}, {Msg} ...)")
                if name is not None and name.split("[")[0].split(".")[0].isdigit():
                    raise ValueError(f"{{{name}}}: use KafkaLog key names, not positions")
            self.render(sample)
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise ValueError(f"{spec!r}: {exc}") from None

    def render(self, doc: Mapping[str, Any]) -> str:
        values = _Blank({key: ("" if value is None else value) for key, value in doc.items()})
        fields = doc.get("Field")
        values["Field"] = _FieldView(fields if isinstance(fields, Mapping) else {})
        values["Fields"] = orjson.dumps(fields if fields is not None else {}, default=str).decode()
        values["Msg"] = _one_line(str(doc.get("Msg", "")))
        return self.spec.format_map(values)


class _FieldView(_Blank):
    """``{Field}`` prints as ``key=value`` pairs; ``{Field[key]}`` is one value (empty when missing)."""

    def __format__(self, spec: str) -> str:
        return format(field_text(dict(self)), spec)
