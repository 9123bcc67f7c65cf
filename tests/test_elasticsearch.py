"""Tests for logpipe.elasticsearch, the elasticsearch exporter and ``logpipe search``.

Pure logic (index names, template body, options, query building) is tested
without a server; everything that claims to work with Elasticsearch runs
against the real node of scripts/elasticsearch.sh. Each test uses its own
index prefix and deletes its indices and template afterwards.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from click.testing import CliRunner

import logpipe
from conftest import Service
from logpipe import elasticsearch as es
from logpipe.cli import main
from logpipe.cli.search import build_query, time_bound
from logpipe.exceptions import ConfigError
from logpipe.exporters.base import ExportResult
from logpipe.exporters.elasticsearch import ElasticsearchExporter, ElasticsearchExporterOptions
from logpipe.record import WIRE_KEYS, make_record

CHINESE = "用户登录失败，密码错误"


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- pure logic ------------------------------------------------------------------------------


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


class TestOptions:
    def _create(self, **env: str) -> ElasticsearchExporter:
        environ = {f"LOGPIPE_ELASTICSEARCH_{k.upper()}": v for k, v in env.items()}
        return logpipe.plugins.create("elasticsearch", environ=environ)  # type: ignore[return-value]

    def test_env_is_read(self) -> None:
        """Every setting comes from LOGPIPE_ELASTICSEARCH_<NAME>."""
        exporter = self._create(
            hosts="http://a:9200,https://b:9243",
            index_prefix="svc",
            replicas="0",
            field_mapping="dynamic",
            timeout="2.5",
        )
        o = exporter.options
        assert o.hosts == ("http://a:9200", "https://b:9243")
        assert (o.index_prefix, o.replicas, o.field_mapping, o.timeout) == ("svc", 0, "dynamic", 2.5)

    @pytest.mark.parametrize(
        ("env", "variable", "words"),
        [
            ({"hosts": "localhost:9200"}, "LOGPIPE_ELASTICSEARCH_HOSTS", "scheme"),
            ({"hosts": "http://localhost"}, "LOGPIPE_ELASTICSEARCH_HOSTS", "port"),
            ({"index_prefix": "Logs"}, "LOGPIPE_ELASTICSEARCH_INDEX_PREFIX", "lower case"),
            ({"index_prefix": "a*b"}, "LOGPIPE_ELASTICSEARCH_INDEX_PREFIX", "'*'"),
            ({"field_mapping": "nested"}, "LOGPIPE_ELASTICSEARCH_FIELD_MAPPING", "flattened"),
            ({"username": "elastic"}, "LOGPIPE_ELASTICSEARCH_PASSWORD", "is not"),
            ({"ca_certs": "/nonexistent/ca.pem"}, "LOGPIPE_ELASTICSEARCH_CA_CERTS", "no such file"),
            ({"timeout": "soon"}, "LOGPIPE_ELASTICSEARCH_TIMEOUT", "float"),
        ],
    )
    def test_bad_values_name_the_variable(self, env: dict[str, str], variable: str, words: str) -> None:
        """A bad setting fails at configure time with the variable's name in the message."""
        with pytest.raises(ConfigError) as info:
            self._create(**env)
        assert variable in str(info.value) and words in str(info.value)

    def test_tls_and_auth_reach_the_client(self, tmp_path: Path) -> None:
        """API key, basic auth and a CA file are handed to elasticsearch-py."""
        ca = tmp_path / "ca.pem"
        ca.write_text("not checked until a TLS handshake\n")
        options = es.ElasticsearchOptions(
            hosts=("https://es.example:9243",), username="u", password="p", ca_certs=ca, timeout=3.0
        )
        client = es.make_client(options)
        node = client.transport.node_pool.get()
        assert node.config.scheme == "https" and node.config.ca_certs == str(ca)
        assert client._headers["authorization"].startswith("Basic ")
        keyed = es.make_client(es.ElasticsearchOptions(api_key="aWQ6a2V5"))
        assert keyed._headers["authorization"] == "ApiKey aWQ6a2V5"


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


# -- against the real node ------------------------------------------------------------------------


@pytest.fixture
def client(es_service: Service) -> Iterator[Any]:
    from elasticsearch import Elasticsearch

    with Elasticsearch(es_service.address, request_timeout=30) as c:
        yield c


@pytest.fixture
def prefix(client: Any) -> Iterator[str]:
    """A fresh index prefix; its indices and template are deleted afterwards."""
    name = f"lptest-{uuid.uuid4().hex[:10]}"
    yield name
    client.options(ignore_status=404).indices.delete(index=f"{name}-*")
    client.options(ignore_status=404).indices.delete_index_template(name=es.template_name(name))


def _options(es_service: Service, prefix: str, **kw: Any) -> dict[str, Any]:
    return {"hosts": (es_service.address,), "index_prefix": prefix, "replicas": 0, **kw}


def _docs(client: Any, prefix: str) -> list[dict[str, Any]]:
    from elasticsearch.helpers import scan

    client.indices.refresh(index=f"{prefix}-*")
    return list(scan(client, index=f"{prefix}-*", query={"query": {"match_all": {}}}))


@pytest.mark.elasticsearch
class TestExporter:
    def test_round_trip_through_the_chain(self, es_service: Service, client: Any, prefix: str) -> None:
        """Records logged through structlog arrive with every wire key, _id = Id, in today's UTC index."""
        pipeline = logpipe.configure(
            exporter="elasticsearch",
            fallback_exporter="none",
            exporter_options={"elasticsearch": _options(es_service, prefix)},
            local_render="none",
        )
        structlog.configure(processors=pipeline.processors())
        log = structlog.get_logger("shop")
        for i in range(300):
            log.info("order placed", order=i, user={"name": "ann", "tags": ["a", "b"]}, action="buy")
        log.error("payment declined", code="E42")
        assert pipeline.force_flush(30)
        stats = pipeline.stats()["elasticsearch"]
        assert (stats.sent, stats.failed, stats.spilled) == (301, 0, 0)

        docs = _docs(client, prefix)
        assert len(docs) == 301
        for doc in docs:
            source = doc["_source"]
            assert set(WIRE_KEYS) <= set(source)
            assert doc["_id"] == source["Id"]
            day = datetime.fromisoformat(source["Time"]).astimezone(timezone.utc)
            assert doc["_index"] == f"{prefix}-{day:%Y.%m.%d}"
        error = next(d["_source"] for d in docs if d["_source"]["Type"] == "error")
        assert error["Msg"] == "payment declined" and error["Field"] == {"code": "E42"}
        assert error["FuncName"].endswith("test_round_trip_through_the_chain")
        order = next(d["_source"] for d in docs if d["_source"]["Field"].get("order") == 7)
        assert order["Action"] == "buy" and order["Field"]["user"] == {"name": "ann", "tags": ["a", "b"]}
        # flattened: any leaf is searchable as a keyword without a mapping of its own
        hits = client.search(index=f"{prefix}-*", query={"term": {"Field.user.name": "ann"}})
        assert hits["hits"]["total"]["value"] == 300

    def test_index_per_event_day_and_template(self, es_service: Service, client: Any, prefix: str) -> None:
        """Events around midnight UTC land in their own day's index, created from the template."""
        exporter = ElasticsearchExporter(ElasticsearchExporterOptions(**_options(es_service, prefix)))
        late = make_record(type="info", msg="late", ts=_ts("2024-02-29T23:59:59.500+00:00"))
        early = make_record(type="info", msg="early", ts=_ts("2024-03-01T00:00:00.500+00:00"))
        seed = make_record(type="info", msg="seed layout", ts=_ts("2024-03-01T08:00:00+00:00"), time_format="seed")
        assert exporter.export([late, early, seed]) is ExportResult.SUCCESS
        docs = {d["_source"]["Msg"]: d["_index"] for d in _docs(client, prefix)}
        assert docs["late"] == f"{prefix}-2024.02.29"
        assert docs["early"] == f"{prefix}-2024.03.01"
        assert "seed layout" in docs  # 'YYYY-MM-DD HH:MM:SS' parses as a date too

        index = f"{prefix}-2024.03.01"
        mapping = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert mapping["Field"]["type"] == "flattened"
        assert mapping["Time"]["type"] == "date"
        settings = client.indices.get_settings(index=index)[index]["settings"]["index"]
        assert settings["number_of_replicas"] == "0"
        assert client.cluster.health(index=f"{prefix}-*")["status"] == "green"
        exporter.shutdown()

    def test_resending_never_duplicates(self, es_service: Service, client: Any, prefix: str) -> None:
        """A batch sent again (retry, spool replay) is answered 409 and counted delivered: still one copy."""
        exporter = ElasticsearchExporter(ElasticsearchExporterOptions(**_options(es_service, prefix)))
        batch = [make_record(type="info", msg=f"m{i}") for i in range(1200)]
        assert exporter.export(batch) is ExportResult.SUCCESS
        assert exporter.export(batch) is ExportResult.SUCCESS
        assert (exporter.created, exporter.duplicates) == (1200, 1200)
        docs = _docs(client, prefix)
        assert len(docs) == 1200 and len({d["_id"] for d in docs}) == 1200
        exporter.shutdown()

    def test_split_by_count_and_bytes(self, es_service: Service, client: Any, prefix: str) -> None:
        """Tiny chunk_size / max_chunk_bytes still deliver everything (many small bulk requests)."""
        options = ElasticsearchExporterOptions(**_options(es_service, prefix, chunk_size=7, max_chunk_bytes=4096))
        exporter = ElasticsearchExporter(options)
        batch = [make_record(type="info", msg="x" * 900, fields={"i": i}) for i in range(60)]
        assert exporter.export(batch) is ExportResult.SUCCESS
        assert len(_docs(client, prefix)) == 60
        exporter.shutdown()

    def test_unreachable_node_goes_to_the_fallback(self, tmp_path: Path) -> None:
        """After the retry budget a connection failure is FAILURE: the fallback gets the whole batch."""
        fallback = tmp_path / "fallback.jsonl"
        pipeline = logpipe.configure(
            exporter="elasticsearch",
            fallback_exporter="file",
            exporter_options={
                "elasticsearch": {
                    "hosts": f"http://127.0.0.1:{_closed_port()}",
                    "max_retries": 2,
                    "backoff": 0.01,
                    "max_backoff": 0.02,
                    "timeout": 1.0,
                },
                "file": {"path": fallback},
            },
            local_render="none",
        )
        structlog.configure(processors=pipeline.processors())
        for i in range(50):
            structlog.get_logger().info("while es is down", i=i)
        assert pipeline.force_flush(30)
        stats = pipeline.stats()["elasticsearch"]
        assert (stats.sent, stats.spilled, stats.failed) == (0, 50, 0)
        lines = fallback.read_bytes().splitlines()
        assert sorted(orjson.loads(line)["Field"]["i"] for line in lines) == list(range(50))

    def test_failed_batch_is_delivered_once_the_node_answers(
        self, es_service: Service, client: Any, prefix: str
    ) -> None:
        """The same batch, refused while the node was unreachable, is delivered whole afterwards."""
        batch = [make_record(type="info", msg=f"m{i}") for i in range(100)]
        down = ElasticsearchExporter(
            ElasticsearchExporterOptions(
                hosts=(f"http://127.0.0.1:{_closed_port()}",), index_prefix=prefix, max_retries=1, backoff=0.01
            )
        )
        assert down.export(batch) is ExportResult.FAILURE
        assert down.last_error and "ConnectionError" in down.last_error
        up = ElasticsearchExporter(ElasticsearchExporterOptions(**_options(es_service, prefix)))
        assert up.export(batch) is ExportResult.SUCCESS
        assert len(_docs(client, prefix)) == 100

    def test_mapping_conflict_goes_to_the_dead_letter_file(
        self, es_service: Service, client: Any, prefix: str, tmp_path: Path
    ) -> None:
        """Items refused with 400 are kept in the DLQ file with the reason; the others are indexed."""
        ts = _ts("2025-06-01T12:00:00+00:00")
        index = es.index_name(prefix, ts)
        client.indices.create(
            index=index,
            mappings={"properties": {"Field": {"properties": {"user": {"type": "long"}}}}},
            settings={"number_of_replicas": 0},
        )
        dlq = tmp_path / "dlq" / "dead.jsonl"
        exporter = ElasticsearchExporter(
            ElasticsearchExporterOptions(**_options(es_service, prefix, install_template=False), dead_letter=dlq)
        )
        good = [make_record(type="info", msg="ok", fields={"user": n}, ts=ts) for n in (1, 2)]
        bad = make_record(type="info", msg="conflict", fields={"user": "alice"}, ts=ts)
        assert exporter.export([good[0], bad, good[1]]) is ExportResult.SUCCESS
        assert exporter.dead_lettered == 1
        (line,) = dlq.read_bytes().splitlines()
        entry = orjson.loads(line)
        assert entry["status"] == 400 and entry["index"] == index
        assert "Field.user" in entry["reason"] and "parsing" in entry["reason"]
        assert entry["record"] == orjson.loads(bad.payload)
        assert sorted(d["_source"]["Field"]["user"] for d in _docs(client, prefix)) == [1, 2]

    def test_refused_template_names_the_analyzer_setting(self, es_service: Service, prefix: str) -> None:
        """An analyzer the cluster lacks (IK here) is reported with the variable to fix."""
        exporter = ElasticsearchExporter(
            ElasticsearchExporterOptions(**_options(es_service, prefix, analyzer="ik_smart"))
        )
        with pytest.raises(ConfigError, match="LOGPIPE_ELASTICSEARCH_ANALYZER") as info:
            exporter.export([make_record(type="info", msg="x")])
        assert "ik_smart" in str(info.value)


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
