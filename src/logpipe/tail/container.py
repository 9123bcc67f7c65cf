"""Container log framing: a CRI or Docker ``json-file`` line -> its time, stream, content, and whether it is partial.

Kubernetes' kubelet (CRI: containerd, CRI-O) writes
``<RFC 3339 time> <stdout|stderr> <P|F> <content>``, a long line cut into
``P`` (partial) pieces ended by an ``F`` (full) one. Docker's ``json-file``
driver writes ``{"log": "<content>\\n", "stream": "stdout", "time": "..."}``,
a long line cut into pieces whose ``log`` has no trailing ``\\n`` but the
last. Either way the content is the program's own line, recognised like any
other (`logpipe.tail.records`) once its pieces are joined (`logpipe.tail.events`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import orjson

__all__ = ["Frame", "cri", "docker", "sniff"]

# The time is checked for its shape only (a digit, then no space): the parser reads it later.
_CRI = re.compile(rb"(\d\S*) (stdout|stderr) ([PF])(?: |$)")


class Frame(NamedTuple):
    """One line of a container log."""

    time: str
    stream: str
    #: A piece of a longer line: its content continues in the next frame.
    partial: bool
    content: bytes


def cri(line: bytes) -> Frame | None:
    """The frame of a CRI line, or None when *line* is not one."""
    m = _CRI.match(line)
    if m is None:
        return None
    return Frame(m[1].decode("ascii", "replace"), m[2].decode(), m[3] == b"P", line[m.end() :])


def docker(line: bytes) -> Frame | None:
    """The frame of a Docker ``json-file`` line, or None when *line* is not one."""
    if line[:1] != b"{":
        return None
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    log, stream, moment = doc.get("log"), doc.get("stream"), doc.get("time")
    if type(log) is not str or type(stream) is not str or type(moment) is not str:
        return None
    partial = not log.endswith("\n")
    return Frame(moment, stream, partial, (log if partial else log[:-1]).encode("utf-8", "surrogatepass"))


def sniff(line: bytes) -> str | None:
    """``"cri"`` or ``"docker"`` when *line* is framed so, else None (the auto format's test of a file's first line)."""
    if cri(line) is not None:
        return "cri"
    if docker(line) is not None:
        return "docker"
    return None
