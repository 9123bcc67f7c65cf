"""Tests for logpipe.cli.render: how ``logpipe search`` shows records to people, pipes and templates."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from logpipe.cli.render import Renderer, Template, field_text, short_time

CHINESE = "用户登录失败，密码错误，请联系管理员重置密码后再试一次（错误码 E1001）"


def doc(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Type": "error",
        "Action": "login",
        "Time": "2025-06-01T12:00:00.123+00:00",
        "Msg": CHINESE,
        "Field": {"user": "张三", "attempts": 3, "note": "two words"},
        "FuncName": "auth.login",
        "TraceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "SpanId": "00f067aa0ba902b7",
        "Service": "认证服务",
        "Host": "vm",
        "Id": "01a2",
    }
    base.update(kw)
    return base


def terminal(width: int, color: bool = False) -> Console:
    return Console(
        width=width,
        file=io.StringIO(),
        force_terminal=True,
        color_system="standard" if color else None,
        record=True,
        highlight=False,
    )


def squash(text: str) -> str:
    """Screen text without whitespace: what remains when wrapping's line breaks and indents are ignored."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("width", [60, 80, 200])
def test_message_and_fields_are_on_screen_within_the_width(width: int) -> None:
    """At 60, 80 and 200 columns nothing is cut: the whole message and every field are shown, no line overflows."""
    console = terminal(width)
    Renderer(console).print(doc())
    screen = console.export_text()
    lines = screen.rstrip("\n").split("\n")
    assert all(cell_len(line.rstrip()) <= width for line in lines), lines
    flat = squash(screen)
    assert squash(CHINESE) in flat
    for piece in ("认证服务", "auth.login", "user=张三", "attempts=3", 'note="twowords"', "ERROR"):
        assert squash(piece) in flat
    if width == 200:
        assert len(lines) == 1  # fits: one line per record


@pytest.mark.parametrize("width", [60, 80])
def test_continuation_lines_line_up_under_the_message_column(width: int) -> None:
    """Wrapped lines start where the service starts on the first line, counted in cells (wide chars are 2)."""
    console = terminal(width)
    Renderer(console).print(doc())
    first, *rest = console.export_text().rstrip("\n").split("\n")
    assert rest, "the long Chinese message must wrap at this width"
    column = first.index("认证服务")  # the head (time, level) is ASCII: index == cells
    for line in rest:
        assert line[:column].strip() == "" and line[column] != " ", (column, line)


def test_narrow_terminal_still_shows_everything() -> None:
    """Below the width where a message column is worth it, lines restart at the left edge; nothing is lost."""
    console = terminal(30)
    Renderer(console).print(doc())
    screen = console.export_text()
    assert squash(CHINESE) in squash(screen)
    assert all(cell_len(line.rstrip()) <= 30 for line in screen.split("\n"))


def test_levels_are_coloured_on_a_terminal_only() -> None:
    """ERROR is red on a terminal; piped output has no escape codes at all."""
    console = terminal(80, color=True)
    Renderer(console).print(doc())
    assert "\x1b[31mERROR" in console.file.getvalue()  # type: ignore[attr-defined]
    piped = Console(file=io.StringIO(), width=40, force_terminal=False)
    Renderer(piped).print(doc())
    assert "\x1b" not in piped.file.getvalue()  # type: ignore[attr-defined]


def test_piped_output_is_one_untruncated_line_per_record() -> None:
    """Not a terminal: one physical line per record even past the width; newlines in Msg are escaped."""
    out = io.StringIO()
    console = Console(file=out, width=40, force_terminal=False)
    renderer = Renderer(console)
    renderer.print(doc(Msg="first line\nsecond line " + "x" * 100))
    renderer.print(doc(Type="info", Msg="short"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "first line\\nsecond line " + "x" * 100 in lines[0]
    assert "INFO" in lines[1] and "short" in lines[1]


def test_multiline_field_is_a_block_on_a_terminal() -> None:
    """A traceback in Field shows as indented lines below the record, not as one escaped string."""
    console = terminal(80)
    Renderer(console).print(doc(Field={"exception": "Traceback (most recent call last):\n  File x\nValueError: boom"}))
    lines = console.export_text().splitlines()
    assert any(line.strip() == "exception:" for line in lines)
    assert any(line.strip() == "ValueError: boom" for line in lines)


def test_field_text_is_logfmt() -> None:
    assert field_text({"a": 1, "b": "x y", "c": [1, 2], "d": 'q"'}) == 'a=1 b="x y" c=[1,2] d="q\\""'
    assert field_text({}) == "" and field_text(None) == ""


def test_short_time() -> None:
    """Today's records show the time of day; older ones the date; anything else as it is."""
    from datetime import datetime

    now = datetime.now().astimezone()
    assert short_time(now.isoformat()) == f"{now:%H:%M:%S}.{now.microsecond // 1000:03d}"
    assert short_time("2001-02-03T04:05:06+00:00").startswith("2001-02-0")
    assert short_time("not a time") == "not a time"


class TestTemplate:
    def test_keys_fields_and_specs(self) -> None:
        line = Template("{Time:.10} {Type:>6} {Msg} [{Field[user]}] {Field[missing]}|{Nope}|").render(doc(Msg="hi"))
        assert line == "2025-06-01  error hi [张三] ||"

    def test_field_as_pairs_and_json(self) -> None:
        d = doc(Field={"a": 1})
        assert Template("{Field}").render(d) == "a=1"
        assert Template("{Fields}").render(d) == '{"a":1}'

    @pytest.mark.parametrize("spec", ["{Time", "{}", "{0}", "{Time!z}"])
    def test_bad_template_fails_at_start(self, spec: str) -> None:
        with pytest.raises(ValueError):
            Template(spec)
