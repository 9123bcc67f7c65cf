"""Multi-line events: which line of a plain-text log continues the event before it (Filebeat's ``multiline``).

A `Rule` answers one question per line, `Rule.continues`: does this line
belong to the event in hand (a traceback's frames, a stack trace's ``at``
lines) or begin the next one? The presets (``LOGPIPE_TAIL_MULTILINE``):

* ``python``: a line starting with whitespace, ``Traceback (most recent call
  last):``, ``During handling of the above exception ...``, ``The above
  exception was the direct cause ...``, an empty line inside a traceback, and
  the exception line that ends a traceback (``ValueError: boom`` after a
  frame) continue the event;
* ``java``: lines starting with whitespace (``\\tat com.x.Y.f(Y.java:3)``),
  ``Caused by: ...``, ``... 12 more`` and an exception class line
  (``java.lang.IllegalStateException: x``) continue the event;
* ``indented``: lines starting with whitespace continue the event;
* any other value is a regular expression matching the *first* line of an
  event (``^\\d{4}-\\d\\d-\\d\\d``): lines it does not match continue.

An empty line continues an event in hand (chained Python tracebacks have
them); trailing empty lines are not part of the message.
"""

from __future__ import annotations

import re

__all__ = ["Rule", "rule"]

_PY_CONTINUES = (
    b"Traceback (most recent call last):",
    b"During handling of the above exception",
    b"The above exception was the direct cause",
)
#: The last line of a traceback: ``ValueError: boom``, ``mod.CustomError``, ``KeyboardInterrupt``.
_PY_EXCEPTION = re.compile(rb"[A-Za-z_][\w.]*(?:: |$)")
_JAVA_MORE = re.compile(rb"\s*\.\.\. \d+ (?:more|common frames omitted)")
_JAVA_EXCEPTION = re.compile(rb"(?:[A-Za-z_$][\w$]*\.)+[\w$]*(?:Exception|Error|Throwable)\b")
_SPACE = (b" ", b"\t")


class Rule:
    """How the lines of a file form events; `continues` is asked once per line while an event is in hand."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._start = None if spec in ("python", "java", "indented") else re.compile(spec.encode())

    def continues(self, line: bytes, traceback: bool, previous: bytes) -> bool:
        """*line* belongs to the event in hand; *traceback*: the event has a Python traceback that is not over.

        *previous* is the event's last line so far.
        """
        if not line:
            return True
        if self._start is not None:
            return self._start.search(line) is None
        if line[:1] in _SPACE:
            return True
        if self.spec == "python":
            if line.startswith(_PY_CONTINUES):
                return True
            return traceback and previous[:1] in _SPACE and _PY_EXCEPTION.match(line) is not None
        if self.spec == "java":
            return (
                line.startswith(b"Caused by:")
                or _JAVA_MORE.match(line) is not None
                or _JAVA_EXCEPTION.match(line) is not None
            )
        return False

    @staticmethod
    def traceback_after(line: bytes, traceback: bool) -> bool:
        """Whether the event has a Python traceback not yet over once *line* joined it.

        ``Traceback (most recent call last):`` opens one; the exception line
        (not indented, not one of the chaining lines) closes it.
        """
        if line.startswith(_PY_CONTINUES[0]):
            return True
        if traceback and line and line[:1] not in _SPACE and not line.startswith(_PY_CONTINUES):
            return False
        return traceback


def rule(spec: str) -> Rule | None:
    """The `Rule` of a ``LOGPIPE_TAIL_MULTILINE`` value; None for ``none``."""
    return None if spec == "none" else Rule(spec)
