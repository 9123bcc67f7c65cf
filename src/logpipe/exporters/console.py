"""The ``console`` exporter: one readable line per record, for development."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from rich.console import Console
from rich.text import Text

from ..config import setting
from ..record import Record
from .base import Exporter, ExportResult

__all__ = ["ConsoleExporter", "ConsoleOptions"]

_STYLES = {"debug": "dim", "info": "green", "warning": "yellow", "error": "bold red", "critical": "bold white on red"}


@dataclass(frozen=True)
class ConsoleOptions:
    stream: Literal["stderr", "stdout"] = setting("stderr", "Where to print: stderr or stdout.")
    color: Literal["auto", "always", "never"] = setting("auto", "Colour output: auto (when a terminal), always, never.")


class ConsoleExporter(Exporter):
    """Prints ``Time Type Msg key=value ... [FuncName trace]`` lines with rich."""

    Options = ConsoleOptions
    options: ConsoleOptions

    def __init__(self, options: ConsoleOptions | None = None) -> None:
        super().__init__(options)
        o = self.options
        self._console = Console(
            file=sys.stderr if o.stream == "stderr" else sys.stdout,
            force_terminal=True if o.color == "always" else None,
            no_color=o.color == "never",
            highlight=False,
            soft_wrap=True,
        )

    def export(self, batch: Sequence[Record]) -> ExportResult:
        for record in batch:
            self._console.print(render_line(record.decoded()))
        return ExportResult.SUCCESS

    def describe(self) -> str:
        return f"console ({self.options.stream})"


def render_line(doc: Mapping[str, Any]) -> Text:
    """One record as a styled line of text."""
    level = str(doc.get("Type", ""))
    line = Text()
    line.append(f"{doc.get('Time', '')} ", style="dim")
    line.append(f"{level:<8}", style=_STYLES.get(level, ""))
    line.append(f" {doc.get('Msg', '')}", style="bold")
    fields = doc.get("Field") or {}
    exception = fields.pop("exception", None) if isinstance(fields, dict) else None
    for key, value in fields.items() if isinstance(fields, dict) else ():
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        line.append(f" {key}=", style="cyan")
        line.append(shown)
    line.append(f"  [{doc.get('FuncName', '')}", style="dim")
    if doc.get("TraceId"):
        line.append(f" trace={doc['TraceId']}", style="dim")
    line.append("]", style="dim")
    if exception:
        line.append(f"\n{exception}", style="red")
    return line
