"""Tests for the elasticsearch exporter against the real node of scripts/elasticsearch.sh.

Each test uses its own index prefix and deletes its indices and template afterwards.
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

import logpipe
from conftest import Service
from conftest import es_docs as _docs
from conftest import es_settings as _options
from logpipe import deadletter
from logpipe import elasticsearch as es
from logpipe.exceptions import ConfigError
from logpipe.exporters.base import ExportResult
from logpipe.exporters.elasticsearch import ElasticsearchExporter, ElasticsearchExporterOptions
from logpipe.record import WIRE_KEYS, make_record


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        assert orjson.loads(entry["value"]) == orjson.loads(bad.payload)
        assert entry["source"] == {"exporter": "elasticsearch"}
        assert deadletter.original(entry) == bad.payload
        assert sorted(d["_source"]["Field"]["user"] for d in _docs(client, prefix)) == [1, 2]

    def test_refused_template_names_the_analyzer_setting(self, es_service: Service, prefix: str) -> None:
        """An analyzer the cluster lacks (IK here) is reported with the variable to fix."""
        exporter = ElasticsearchExporter(
            ElasticsearchExporterOptions(**_options(es_service, prefix, analyzer="ik_smart"))
        )
        with pytest.raises(ConfigError, match="LOGPIPE_ELASTICSEARCH_ANALYZER") as info:
            exporter.export([make_record(type="info", msg="x")])
        assert "ik_smart" in str(info.value)
