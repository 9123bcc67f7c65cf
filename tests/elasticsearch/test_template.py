"""Tests for logpipe.elasticsearch.template: daily index names and the index template body."""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any

import pytest

from logpipe import elasticsearch as es


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestIndexName:
    def test_daily_index_by_utc_event_day(self) -> None:
        """The index is the event's UTC day, whatever offset the event was written in."""
        assert es.index_name("app", _ts("2025-01-01T23:30:00-05:00")) == "app-2025.01.02"
        assert es.index_name("app", _ts("2024-02-29T23:59:59.999+00:00")) == "app-2024.02.29"

    def test_pattern_matches_daily_indices(self) -> None:
        """Searches and the template address every day through one pattern."""
        assert es.index_pattern("app") == "app-*"


class TestTemplate:
    def test_kafkalog_fields_are_mapped(self) -> None:
        """Time is a multi-format date, Msg text + keyword, ids keywords, Field flattened."""
        body = es.index_template(es.ElasticsearchOptions(index_prefix="app", replicas=0))
        props = body["template"]["mappings"]["properties"]
        assert body["index_patterns"] == ["app-*"]
        assert props["Time"] == {"type": "date", "format": es.TIME_FORMAT}
        assert "yyyy-MM-dd HH:mm:ss" in es.TIME_FORMAT and "strict_date_optional_time" in es.TIME_FORMAT
        assert props["Msg"]["type"] == "text" and props["Msg"]["analyzer"] == "standard"
        assert props["Msg"]["fields"]["keyword"] == {"type": "keyword", "ignore_above": 1024}
        for name in ("Type", "Action", "FuncName", "Service", "TraceId", "SpanId", "Host", "Id"):
            assert props[name]["type"] == "keyword"
        assert props["Field"]["type"] == "flattened"
        assert body["template"]["mappings"]["dynamic"] is False
        assert body["template"]["settings"]["number_of_replicas"] == 0

    @pytest.mark.parametrize(
        ("kind", "mapping"),
        [
            ("dynamic", {"type": "object", "dynamic": True}),
            ("object-disabled", {"type": "object", "enabled": False}),
        ],
    )
    def test_field_mapping_choices(self, kind: es.FieldMapping, mapping: dict[str, Any]) -> None:
        """field_mapping switches Field between flattened, a dynamic object and an unindexed one."""
        body = es.index_template(es.ElasticsearchOptions(field_mapping=kind))
        assert body["template"]["mappings"]["properties"]["Field"] == mapping

    def test_analyzers(self) -> None:
        """The Msg analyzer and search analyzer are settings (IK: ik_max_word + ik_smart)."""
        options = es.ElasticsearchOptions(analyzer="ik_max_word", search_analyzer="ik_smart")
        msg = es.index_template(options)["template"]["mappings"]["properties"]["Msg"]
        assert (msg["analyzer"], msg["search_analyzer"]) == ("ik_max_word", "ik_smart")

    def test_ilm_policy(self) -> None:
        """An ILM policy is named in the settings, aged by the day in the index name; nothing when unset."""
        with_policy = es.index_template(es.ElasticsearchOptions(ilm_policy="logpipe-30d"))
        assert with_policy["template"]["settings"]["index.lifecycle.name"] == "logpipe-30d"
        assert with_policy["template"]["settings"]["index.lifecycle.parse_origination_date"] is True
        without = es.index_template(es.ElasticsearchOptions())
        assert not any(k.startswith("index.lifecycle") for k in without["template"]["settings"])

    def test_longer_prefixes_win(self) -> None:
        """Overlapping prefixes get different priorities (Elasticsearch refuses ties)."""
        short = es.index_template(es.ElasticsearchOptions(index_prefix="app"))["priority"]
        long = es.index_template(es.ElasticsearchOptions(index_prefix="app-eu"))["priority"]
        assert long > short
