"""Kibana saved objects (deploy/kibana/logpipe.ndjson) and ``logpipe kibana import`` against a local HTTP server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import REPO
from logpipe import elasticsearch as es
from logpipe import kibana as kb
from logpipe.cli import main

NDJSON = REPO / "deploy" / "kibana" / "logpipe.ndjson"
KAFKALOG_COLUMNS = ["Type", "Service", "FuncName", "Msg", "TraceId"]
SECRET = "pa55-w0rd-never-shown"


def objects() -> list[dict[str, Any]]:
    return kb.load_objects(NDJSON.read_bytes())


def by_type(kind: str) -> list[dict[str, Any]]:
    return [o for o in objects() if o["type"] == kind]


# -- the objects ------------------------------------------------------------------------------


def test_the_file_is_what_the_generator_writes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import gen_kibana_objects as g; print(g.render(), end='')"],
        cwd=REPO / "scripts",
        capture_output=True,
        check=True,
    )
    assert done.stdout == NDJSON.read_bytes(), "run: python scripts/gen_kibana_objects.py"


def test_the_packaged_copy_is_the_deploy_file() -> None:
    assert kb.packaged_objects() == NDJSON.read_bytes()


def test_every_reference_resolves_to_an_object_in_the_file() -> None:
    known = {(o["type"], o["id"]) for o in objects()}
    assert len(known) == len(objects()), "duplicate type/id"
    for obj in objects():
        for ref in obj.get("references", []):
            assert (ref["type"], ref["id"]) in known, f"{obj['type']} {obj['id']} refers to missing {ref}"


def test_every_ref_name_used_in_the_attributes_has_a_reference() -> None:
    """searchSourceJSON's indexRefName and panelsJSON's panelRefName must each name a reference."""
    for obj in objects():
        names = {r["name"] for r in obj.get("references", [])}
        meta = obj["attributes"].get("kibanaSavedObjectMeta", {})
        source = json.loads(meta.get("searchSourceJSON", "{}"))
        if "indexRefName" in source:
            assert source["indexRefName"] in names, obj["id"]
        for panel in json.loads(obj["attributes"].get("panelsJSON", "[]")):
            assert f"{panel['panelIndex']}:{panel['panelRefName']}" in names, (obj["id"], panel)


def test_data_view_matches_the_indices_logpipe_writes() -> None:
    [view] = by_type("index-pattern")
    attributes = view["attributes"]
    assert attributes["title"] == es.index_pattern(es.ElasticsearchOptions().index_prefix)
    assert attributes["timeFieldName"] == "Time"
    formats = json.loads(attributes["fieldFormatMap"])
    assert formats["Time"]["id"] == "date"
    assert formats["TraceId"]["id"] == "url" and "TraceId:{{value}}" in formats["TraceId"]["params"]["urlTemplate"]
    mapped = es.index_template(es.ElasticsearchOptions())["template"]["mappings"]["properties"]
    assert set(formats) <= set(mapped)  # formats only for fields the template maps


def test_saved_searches_show_the_kafkalog_columns() -> None:
    searches = by_type("search")
    assert searches
    for search in searches:
        assert search["attributes"]["columns"] == KAFKALOG_COLUMNS
        assert search["attributes"]["sort"] == [["Time", "desc"]]


def test_visualizations_aggregate_on_mapped_keyword_fields() -> None:
    mapped = es.index_template(es.ElasticsearchOptions())["template"]["mappings"]["properties"]
    fields = set()
    for vis in by_type("visualization"):
        state = json.loads(vis["attributes"]["visState"])
        for agg in state["aggs"]:
            if "field" in agg["params"]:
                fields.add(agg["params"]["field"])
                assert agg["params"]["field"] in mapped
    assert {"Time", "Type", "FuncName", "Service", "TraceId"} <= fields


def test_dashboard_shows_every_visualization_and_the_records() -> None:
    [dashboard] = by_type("dashboard")
    on_board = {r["id"] for r in dashboard["references"]}
    assert {v["id"] for v in by_type("visualization")} <= on_board
    assert "logpipe-search" in on_board
    assert dashboard["attributes"]["timeRestore"] is True


def test_index_prefix_rewrites_only_the_data_view_title() -> None:
    rewritten = kb.with_index_prefix(objects(), "msproject_log")
    [view] = [o for o in rewritten if o["type"] == "index-pattern"]
    assert view["attributes"]["title"] == "msproject_log-*"
    assert view["id"] == by_type("index-pattern")[0]["id"]  # references keep resolving
    assert by_type("index-pattern")[0]["attributes"]["title"] == "logpipe-*"  # input untouched


# -- the command against a local server -------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeKibana:
    url: str
    received: list[Request] = field(default_factory=list)
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def kibana_server() -> Iterator[FakeKibana]:
    """A Kibana stand-in on 127.0.0.1 that records each request and answers what the test set."""
    state = FakeKibana(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.received.append(Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            answer = state.answer or {"success": True, "successCount": 8, "successResults": []}
            data = json.dumps(answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def multipart_file(request: Request) -> tuple[str | None, str | None, bytes]:
    """(field name, filename, content) of the one part of a multipart/form-data body."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    assert message.is_multipart()
    [part] = list(message.iter_parts())
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return part.get_param("name", header="content-disposition"), part.get_filename(), payload


CLEAN_ENV = {
    "LOGPIPE_KIBANA_URL": None,
    "LOGPIPE_KIBANA_SPACE": None,
    "LOGPIPE_KIBANA_API_KEY": None,
    "LOGPIPE_KIBANA_USERNAME": None,
    "LOGPIPE_KIBANA_PASSWORD": None,
    "LOGPIPE_KIBANA_VERIFY_CERTS": None,
    "LOGPIPE_ELASTICSEARCH_INDEX_PREFIX": None,
}


def invoke(*args: str, **env: str | None) -> Any:
    return CliRunner().invoke(main, ["kibana", "import", *args], env={**CLEAN_ENV, **env})


def test_import_posts_the_objects_as_multipart_with_basic_auth(kibana_server: FakeKibana) -> None:
    result = invoke(kibana_server.url, LOGPIPE_KIBANA_USERNAME="elastic", LOGPIPE_KIBANA_PASSWORD=SECRET)
    assert result.exit_code == 0, result.output
    assert "imported 8 saved object(s)" in result.output
    assert SECRET not in result.output

    [request] = kibana_server.received
    assert request.method == "POST"
    assert request.path == "/api/saved_objects/_import?overwrite=true"
    assert request.headers["kbn-xsrf"]
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    expected = "Basic " + base64.b64encode(f"elastic:{SECRET}".encode()).decode()
    assert request.headers["authorization"] == expected
    name, filename, content = multipart_file(request)
    assert name == "file" and filename is not None and filename.endswith(".ndjson")
    assert kb.load_objects(content) == objects()


def test_import_into_a_space_with_an_api_key_and_another_prefix(kibana_server: FakeKibana) -> None:
    result = invoke(
        "--space",
        "ops",
        "--index-prefix",
        "msproject_log",
        LOGPIPE_KIBANA_URL=kibana_server.url + "/kibana/",  # a base path, trailing slash
        LOGPIPE_KIBANA_API_KEY=SECRET,
    )
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    [request] = kibana_server.received
    assert request.path == "/kibana/s/ops/api/saved_objects/_import?overwrite=true"
    assert request.headers["authorization"] == f"ApiKey {SECRET}"
    sent = kb.load_objects(multipart_file(request)[2])
    assert [o["attributes"]["title"] for o in sent if o["type"] == "index-pattern"] == ["msproject_log-*"]
    assert "/s/ops/app/dashboards#/view/logpipe-overview" in result.output


def test_refused_credentials_are_a_clear_error_without_the_secret(kibana_server: FakeKibana) -> None:
    kibana_server.status = 401
    kibana_server.answer = {"statusCode": 401, "error": "Unauthorized", "message": "unable to authenticate"}
    result = invoke(kibana_server.url, LOGPIPE_KIBANA_USERNAME="elastic", LOGPIPE_KIBANA_PASSWORD=SECRET)
    assert result.exit_code == 1
    assert "refused the credentials (HTTP 401" in result.output
    assert "LOGPIPE_KIBANA_USERNAME" in result.output
    assert SECRET not in result.output


def test_objects_kibana_refuses_fail_the_command(kibana_server: FakeKibana) -> None:
    kibana_server.answer = {
        "success": False,
        "successCount": 7,
        "errors": [{"type": "dashboard", "id": "logpipe-overview", "error": {"type": "conflict"}}],
    }
    result = invoke(kibana_server.url)
    assert result.exit_code == 1
    assert "dashboard logpipe-overview: conflict" in result.output


def test_unreachable_kibana_names_the_url_without_credentials() -> None:
    result = invoke(f"http://elastic:{SECRET}@127.0.0.1:9/")  # port 9 (discard): nothing listens
    assert result.exit_code == 1
    assert "cannot reach Kibana at http://***@127.0.0.1:9/" in result.output
    assert SECRET not in result.output


def test_wrong_settings_name_the_variable_or_flag(tmp_path: Path) -> None:
    bad_url = invoke("kibana:5601")
    assert bad_url.exit_code == 2 and "URL" in bad_url.output
    half_auth = invoke("http://127.0.0.1:9", LOGPIPE_KIBANA_USERNAME="elastic")
    assert half_auth.exit_code == 2 and "LOGPIPE_KIBANA_PASSWORD" in half_auth.output
    bad_verify = invoke("http://127.0.0.1:9", LOGPIPE_KIBANA_VERIFY_CERTS="maybe")
    assert bad_verify.exit_code == 2 and "LOGPIPE_KIBANA_VERIFY_CERTS" in bad_verify.output
    bad_space = invoke("http://127.0.0.1:9", "--space", "Ops Team")
    assert bad_space.exit_code == 2 and "--space" in bad_space.output
    not_ndjson = tmp_path / "x.ndjson"
    not_ndjson.write_text("{not json\n")
    bad_file = invoke("http://127.0.0.1:9", "--file", str(not_ndjson))
    assert bad_file.exit_code == 2 and "line 1" in bad_file.output


def test_insecure_warns_loudly(kibana_server: FakeKibana) -> None:
    result = invoke(kibana_server.url, "--insecure")
    assert result.exit_code == 0, result.output
    assert "TLS certificate verification is OFF" in result.output
