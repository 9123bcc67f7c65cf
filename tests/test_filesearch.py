"""Tests for logpipe.filesearch and ``logpipe search`` without a server (the file exporter's files)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from conftest import Service
from logpipe.cli import main
from logpipe.filesearch import FileFollower, Query, parse_bound, search_files, words
from logpipe.record import make_record

NOW = time.time()


def line(msg: str, *, type: str = "info", service: str = "shop", trace_id: str = "", ago: float = 0.0) -> bytes:
    return make_record(type=type, msg=msg, service=service, trace_id=trace_id, ts=NOW - ago).payload + b"\n"


def write(path: Path, *lines: bytes, mode: str = "ab") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as handle:
        handle.write(b"".join(lines))


def msgs(docs: list[dict[str, Any]]) -> list[str]:
    return [d["Msg"] for d in docs]


class TestWords:
    def test_standard_analyzer_rules(self) -> None:
        """One word per CJK character, lower case, words joined by . ' : between letters and , between digits."""
        assert words("用户登录失败，密码错误") == list("用户登录失败密码错误")
        assert words("User_Login failed: v1.2 x.com foo:bar 1,000 3.x don't") == [
            "user_login", "failed", "v1.2", "x.com", "foo:bar", "1,000", "3", "x", "don't",
        ]  # fmt: skip

    @pytest.mark.elasticsearch
    @pytest.mark.parametrize(
        "text",
        [
            "用户登录失败，密码错误",
            "user_login failed: 3.14 v1.2 don't foo:bar 1,000 a,b http://x.com/a?b=c ERROR",
            "payment accepted 支付成功 ✅ 🎉ok",
            "カタカナ ひらがな 한국어 Straße ÉCOLE naïve",
            "x_1 1_x 3.x x.3 a'b'c o’neil 1'2 a1.b2 ab.cd.12 _x_ __",
            "foo::bar a:1 1:a 2024-01-01T10:00:00Z id=42 e-mail ümlaut@x.de",
        ],
    )
    def test_same_words_as_the_real_analyzer(self, es_service: Service, text: str) -> None:
        """The words match what the node's ``standard`` analyzer makes of the same text."""
        from elasticsearch import Elasticsearch

        with Elasticsearch(es_service.address) as client:
            tokens = [t["token"] for t in client.indices.analyze(analyzer="standard", text=text)["tokens"]]
        assert words(text) == tokens


class TestQuery:
    @pytest.fixture
    def files(self, tmp_path: Path) -> str:
        """A rotated file (older) and the active one, as the file exporter names them."""
        active = tmp_path / "logs" / "logpipe.jsonl"
        rotated = tmp_path / "logs" / "logpipe.jsonl.20250601T000000.000000Z"
        write(rotated, line("用户登录失败，密码错误", type="error", service="auth", ago=7200))
        write(rotated, line("user logged in", service="auth", trace_id="t1", ago=3600))
        os.utime(rotated, (NOW - 3600, NOW - 3600))
        write(active, line("user login failed", type="error", service="auth", trace_id="t2", ago=60))
        write(active, b"not json at all\n", b'["a list"]\n')
        write(active, line("disk full", type="error", service="store", trace_id="t3", ago=10))
        return str(tmp_path / "logs" / "logpipe.jsonl*")

    def run(self, pattern: str, size: int = 50, **kw: Any) -> list[str]:
        docs, total, _ = search_files(pattern, Query(**kw), size)
        assert total == len(docs) or size < total
        return msgs(docs)

    def test_filters_like_elasticsearch(self, files: str) -> None:
        """Text (all words), level, service, trace id and the time range; rotated files are searched too."""
        assert self.run(files) == ["用户登录失败，密码错误", "user logged in", "user login failed", "disk full"]
        assert self.run(files, levels=("error",), services=("auth",)) == ["用户登录失败，密码错误", "user login failed"]
        assert self.run(files, trace_id="t3") == ["disk full"]
        assert self.run(files, text="USER") == ["user logged in", "user login failed"]
        assert self.run(files, text="login failed") == ["user login failed"]
        assert self.run(files, text="failed login") == ["user login failed"]
        assert self.run(files, text="failed login", phrase=True) == []
        assert self.run(files, since=parse_bound("15m", "--since")) == ["user login failed", "disk full"]
        until = datetime.now(timezone.utc) - timedelta(minutes=30)
        assert self.run(files, until=until) == ["用户登录失败，密码错误", "user logged in"]
        assert self.run(files, size=1) == ["disk full"]  # the newest

    def test_chinese_per_character_like_the_standard_analyzer(self, files: str) -> None:
        """密码 finds the message; 码错 (end of one word, start of the next) too, as with the standard analyzer."""
        assert self.run(files, text="密码") == ["用户登录失败，密码错误"]
        assert self.run(files, text="码错") == ["用户登录失败，密码错误"]
        assert self.run(files, text="密码", phrase=True) == ["用户登录失败，密码错误"]
        assert self.run(files, text="码密", phrase=True) == []

    def test_escaped_unicode_is_still_found(self, tmp_path: Path) -> None:
        """A producer that \\u-escapes (json.dumps' default) is searched by meaning, not by bytes."""
        import json

        path = tmp_path / "a.jsonl"
        record = orjson.loads(line("密码 Error"))
        write(path, json.dumps(record).encode() + b"\n")
        assert self.run(str(path), text="密码 error") == ["密码 Error"]

    def test_time_bounds(self) -> None:
        now = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
        assert parse_bound("15m", "--since", now) == now - timedelta(minutes=15)
        assert parse_bound("now-2h", "--since", now) == now - timedelta(hours=2)
        assert parse_bound("2025-06-01 10:00:00", "--since") == datetime(2025, 6, 1, 10, tzinfo=timezone.utc)
        with pytest.raises(ValueError, match="--until"):
            parse_bound("now-1d/d", "--until")


class TestFollower:
    def test_appended_partial_and_rotated_lines_arrive_once(self, tmp_path: Path) -> None:
        """poll returns only new lines; a half-written line waits; a rotated file is not read twice."""
        active = tmp_path / "logpipe.jsonl"
        write(active, line("one"))
        follower = FileFollower(str(tmp_path / "logpipe.jsonl*"), Query())
        assert msgs(list(follower.scan())) == ["one"]
        assert follower.poll() == []
        two, three = line("two"), line("three")
        write(active, two, three[:20])
        assert msgs(follower.poll()) == ["two"]
        write(active, three[20:])
        assert msgs(follower.poll()) == ["three"]
        active.rename(tmp_path / "logpipe.jsonl.20250601T000000.000000Z")  # rotation: rename, new file
        write(active, line("four"))
        assert msgs(follower.poll()) == ["four"]
        assert follower.poll() == []


class TestCommand:
    def test_demo_then_search_without_a_server(self) -> None:
        """`logpipe demo` then `logpipe search` (no Elasticsearch configured) finds the demo's records."""
        runner = CliRunner()
        assert runner.invoke(main, ["demo"]).exit_code == 0
        result = runner.invoke(main, ["search"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert "订单已创建 order created" in result.stdout and "upstream timeout" in result.stdout
        assert "no Elasticsearch configured" in result.stderr
        found = runner.invoke(main, ["search", "支付", "--json"])
        assert {orjson.loads(x)["Msg"] for x in found.stdout.splitlines()} == {"payment accepted 支付成功 ✅"}

    def test_screen_at_60_columns_shows_the_messages(self) -> None:
        """On a (forced) 60-column terminal every demo message is on screen, wrapped not cut."""
        from rich.text import Text

        runner = CliRunner()
        assert runner.invoke(main, ["demo"]).exit_code == 0
        result = runner.invoke(main, ["search"], env={"COLUMNS": "60", "FORCE_COLOR": "1"})
        assert result.exit_code == 0, result.output
        screen = Text.from_ansi(result.stdout).plain
        assert all(len(row) <= 60 for row in screen.splitlines() if row.isascii())
        flat = "".join(screen.split())
        for message in ("demostarting", "订单已创建ordercreated", "paymentaccepted支付成功✅", "upstreamtimeout"):
            assert message in flat

    def test_format_and_files_flag(self, tmp_path: Path) -> None:
        path = tmp_path / "x" / "app.jsonl"
        write(path, line("hello world", type="warning"))
        result = CliRunner().invoke(main, ["search", "--files", str(path), "--format", "{Type}|{Msg}"])
        assert result.exit_code == 0, result.output
        assert result.stdout == "warning|hello world\n"

    def test_usage_errors(self, tmp_path: Path) -> None:
        runner = CliRunner()
        missing = runner.invoke(main, ["search", "--files", str(tmp_path / "nothing*")])
        assert missing.exit_code == 1 and "no file matches" in missing.output
        both = runner.invoke(main, ["search", "--json", "--format", "{Msg}"])
        assert both.exit_code == 2 and "--json and --format" in both.output
        bad = runner.invoke(main, ["search", "--format", "{Msg"])
        assert bad.exit_code == 2 and "--format" in bad.output
        math = runner.invoke(main, ["search", "--files", "x", "--since", "now-1d/d"])
        assert math.exit_code == 2 and "--since" in math.output
