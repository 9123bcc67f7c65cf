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


def test_the_first_report_is_printed_on_a_freshly_booted_machine(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The monotonic clock counts from boot: at 5 s after boot the first line still goes out."""
    monkeypatch.setattr("logpipe.report.time.monotonic", lambda: 5.0)
    assert Reporter("kafka: ", every=10.0)("broker unavailable")
    assert capsys.readouterr().err == "logpipe: kafka: broker unavailable\n"
