"""Tests for ``logpipe search``: query building, and searches against the real node.

Each test uses its own index prefix and deletes its indices and template afterwards.
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from conftest import Service
from conftest import es_settings as _options
from logpipe.cli import main
from logpipe.cli.search import build_query, time_bound
from logpipe.exporters.base import ExportResult
from logpipe.exporters.elasticsearch import ElasticsearchExporter, ElasticsearchExporterOptions
from logpipe.record import make_record

CHINESE = "用户登录失败，密码错误"


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestSearchQuery:
    def test_durations_become_date_math(self) -> None:
        """--since 15m means the last fifteen minutes; ISO times pass through."""
        assert time_bound("15m", "--since") == "now-15m"
        assert time_bound("2025-01-01T00:00:00+08:00", "--since") == "2025-01-01T00:00:00+08:00"

    def test_filters(self) -> None:
        """Text must match all its words; level, service and trace id are exact filters."""
        query = build_query(
            "login failed", since="now-1h", until=None, levels=("error",), services=("api",), trace_id="abc"
        )
        assert query["bool"]["must"] == [{"match": {"Msg": {"query": "login failed", "operator": "and"}}}]
        assert {"range": {"Time": {"gte": "now-1h"}}} in query["bool"]["filter"]
        assert {"terms": {"Type": ["error"]}} in query["bool"]["filter"]
        assert {"terms": {"Service": ["api"]}} in query["bool"]["filter"]
        assert {"term": {"TraceId": "abc"}} in query["bool"]["filter"]


@pytest.mark.elasticsearch
class TestChineseSearch:
    def _index(self, es_service: Service, prefix: str, analyzer: str) -> None:
        exporter = ElasticsearchExporter(
            ElasticsearchExporterOptions(**_options(es_service, prefix, analyzer=analyzer))
        )
        records = [
            make_record(type="error", msg=CHINESE, func_name="auth.login", service="auth"),
            make_record(type="info", msg="用户退出", func_name="auth.logout", service="auth"),
        ]
        assert exporter.export(records) is ExportResult.SUCCESS
        exporter.shutdown()

    def _search(self, es_service: Service, prefix: str, text: str) -> list[dict[str, Any]]:
        from elasticsearch import Elasticsearch

        Elasticsearch(es_service.address).indices.refresh(index=f"{prefix}-*")
        result = CliRunner().invoke(
            main, ["search", text, "--hosts", es_service.address, "--index-prefix", prefix, "--since", "1h", "--json"]
        )
        assert result.exit_code == 0, result.output
        return [orjson.loads(line) for line in result.stdout.splitlines()]

    def test_smartcn_finds_a_word(self, es_service: Service, prefix: str) -> None:
        """With smartcn, searching 密码 finds the message; 码错 (across two words) does not."""
        self._index(es_service, prefix, "smartcn")
        assert [d["Msg"] for d in self._search(es_service, prefix, "密码")] == [CHINESE]
        assert self._search(es_service, prefix, "码错") == []

    def test_standard_matches_per_character(self, es_service: Service, prefix: str) -> None:
        """With standard every CJK character is a token: 密码 is found, and so is 码错 (false hit)."""
        self._index(es_service, prefix, "standard")
        assert [d["Msg"] for d in self._search(es_service, prefix, "密码")] == [CHINESE]
        assert [d["Msg"] for d in self._search(es_service, prefix, "码错")] == [CHINESE]


@pytest.mark.elasticsearch
class TestSearchCommand:
    @pytest.fixture
    def indexed(self, es_service: Service, client: Any, prefix: str) -> str:
        exporter = ElasticsearchExporter(ElasticsearchExporterOptions(**_options(es_service, prefix)))
        now = datetime.now(timezone.utc).timestamp()
        exporter.export(
            [
                make_record(
                    type="info",
                    msg="user logged in",
                    service="auth",
                    func_name="auth.login",
                    trace_id="t1",
                    ts=now - 60,
                ),
                make_record(
                    type="error",
                    msg="user login failed",
                    service="auth",
                    func_name="auth.login",
                    trace_id="t2",
                    ts=now - 30,
                ),
                make_record(
                    type="error", msg="disk full", service="store", func_name="store.write", trace_id="t3", ts=now - 10
                ),
                make_record(type="error", msg="old failure", service="auth", ts=now - 7200),
            ]
        )
        exporter.shutdown()
        client.indices.refresh(index=f"{prefix}-*")
        return prefix

    def _run(self, es_service: Service, prefix: str, *args: str) -> Any:
        result = CliRunner().invoke(
            main, ["search", *args, "--hosts", es_service.address, "--index-prefix", prefix], env={"COLUMNS": "200"}
        )
        assert result.exit_code == 0, result.output
        return result

    def test_filters(self, es_service: Service, indexed: str) -> None:
        """--level, --service, --trace-id and --since narrow the hits; --json prints the records."""

        def msgs(*args: str) -> list[str]:
            out = self._run(es_service, indexed, "--json", *args).stdout
            return [orjson.loads(line)["Msg"] for line in out.splitlines()]

        assert msgs() == ["user logged in", "user login failed", "disk full"]  # oldest first
        assert msgs("--level", "error") == ["user login failed", "disk full"]
        assert msgs("--level", "error", "--service", "auth") == ["user login failed"]
        assert msgs("--trace-id", "t3") == ["disk full"]
        assert msgs("user") == ["user logged in", "user login failed"]
        assert msgs("login failed") == ["user login failed"]
        assert msgs("--since", "3h", "failure") == ["old failure"]
        assert msgs("--size", "1") == ["disk full"]  # the newest

    def test_lines_for_people(self, es_service: Service, indexed: str) -> None:
        """Without --json each hit is one line: level, service, FuncName and the whole message."""
        out = self._run(es_service, indexed, "--level", "error").stdout
        lines = out.splitlines()
        assert len(lines) == 2
        assert "ERROR" in lines[1] and "store" in lines[1] and "store.write" in lines[1] and "disk full" in lines[1]
        assert "user logged in" not in out

    def test_unreachable_node_is_a_clear_error(self, prefix: str) -> None:
        """A node that does not answer is reported with the flag and variable to check."""
        result = CliRunner().invoke(
            main, ["search", "--hosts", f"http://127.0.0.1:{_closed_port()}", "--index-prefix", prefix]
        )
        assert result.exit_code == 1
        assert "LOGPIPE_ELASTICSEARCH_HOSTS" in result.output
