"""Tests for logpipe.report: rate-limited lines on stderr."""

from __future__ import annotations

import pytest

from logpipe.report import Reporter


def test_one_line_per_interval_unless_forced(capsys: pytest.CaptureFixture[str]) -> None:
    report = Reporter("spool: ", every=3600)
    assert report("disk full")
    assert not report("disk still full")  # within the interval: counted elsewhere, not printed
    assert report("back", force=True)
    assert capsys.readouterr().err.splitlines() == ["logpipe: spool: disk full", "logpipe: spool: back"]


def test_reporters_limit_independently(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = Reporter("a: ", every=3600), Reporter("b: ", every=3600)
    assert a("x") and b("y")
    assert capsys.readouterr().err.splitlines() == ["logpipe: a: x", "logpipe: b: y"]


def test_a_closed_stderr_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed:
        def write(self, _: str) -> int:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr("sys.stderr", Closed())
    assert Reporter()("lost") is False
