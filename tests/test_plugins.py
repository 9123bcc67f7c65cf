"""Exporter plugins: discovery by entry point, and the example third-party plugin.

``plugins/logpipe-webhook`` is a separate distribution that registers a
``webhook`` exporter in the ``logpipe.exporters`` group. The unit tests import
it straight from its source tree; the slow tests pip-install logpipe and the
plugin into a fresh virtualenv, as a user would, and check that a record
logged there arrives at a real HTTP server as one NDJSON line.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import wait_until
from logpipe import ConfigError, ExportResult, config, make_record, plugins
from logpipe.dispatch import Dispatcher
from logpipe.record import WIRE_KEYS
from logpipe.testing import InMemoryExporter

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "logpipe-webhook"


# -- a real HTTP server that records what it is sent ----------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.server.record(Received(self.path, dict(self.headers), body)))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Recorder(ThreadingHTTPServer):
    """Records POSTs; answers with the queued ``statuses`` first, then 200."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/logs"

    def record(self, request: Received) -> int:
        with self._lock:
            self.received.append(request)
            return self.statuses.pop(0) if self.statuses else 200

    def lines(self) -> list[bytes]:
        with self._lock:
            return [line for r in self.received for line in r.body.splitlines()]


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder()
    thread = threading.Thread(target=recorder.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.shutdown()
        recorder.server_close()
        thread.join(5)


def closed_port() -> int:
    """A local port nothing listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- discovery through the installed entry points -------------------------------------


def test_available_lists_the_builtin_exporters() -> None:
    found = plugins.available()
    assert {"file", "console", "kafka", "elasticsearch", "spool"} <= set(found)
    assert found["file"].value == "logpipe.exporters.file:FileExporter"


def test_the_test_exporter_is_not_an_entry_point() -> None:
    """InMemoryExporter is for tests: no production setting can select it by name."""
    assert "memory" not in plugins.available()
    with pytest.raises(ConfigError, match="unknown exporter 'memory'"):
        plugins.create("memory")


def test_unknown_exporter_names_the_variable_and_lists_installed_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        plugins.create("nope")
    message = str(caught.value)
    assert "LOGPIPE_EXPORTER" in message
    assert "'nope'" in message
    for name in ("file", "console", "spool"):
        assert name in message


# -- the webhook plugin, imported from its source tree ----------------------------------


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(PLUGIN / "src"))
    return importlib.import_module("logpipe_webhook")


def make_exporter(webhook: ModuleType, **settings: Any) -> Any:
    options = config.load(webhook.WebhookOptions, "LOGPIPE_WEBHOOK_", settings, environ={})
    return webhook.WebhookExporter(options)


def records(n: int) -> list[Any]:
    return [make_record(type="info", msg=f"m{i}", fields={"i": i}) for i in range(n)]


def test_webhook_posts_a_batch_as_ndjson(webhook: ModuleType, server: Recorder) -> None:
    exporter = make_exporter(webhook, url=server.url, headers="Authorization: Bearer t0ken, X-Team: core")
    batch = records(3)
    assert exporter.export(batch) is ExportResult.SUCCESS
    [request] = server.received
    assert request.path == "/logs"
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert request.headers["X-Team"] == "core"
    assert request.body == b"".join(r.payload + b"\n" for r in batch)
    assert exporter.describe() == f"webhook POST {server.url}"


def test_webhook_retries_5xx_then_returns_failure(webhook: ModuleType, server: Recorder) -> None:
    exporter = make_exporter(webhook, url=server.url, retries=2, backoff=0.01)
    server.statuses = [500] * 10
    assert exporter.export(records(2)) is ExportResult.FAILURE
    assert len(server.received) == 3  # the first try and two retries
    assert len({r.body for r in server.received}) == 1  # the same batch each time
    assert exporter.last_error == "HTTP 500 Internal Server Error"


def test_webhook_succeeds_when_a_retry_gets_through(webhook: ModuleType, server: Recorder) -> None:
    exporter = make_exporter(webhook, url=server.url, retries=3, backoff=0.01)
    server.statuses = [503, 429]
    assert exporter.export(records(1)) is ExportResult.SUCCESS
    assert len(server.received) == 3
    assert exporter.last_error is None


@pytest.mark.parametrize("status", [400, 404, 301])
def test_webhook_does_not_retry_client_errors_or_follow_redirects(
    webhook: ModuleType, server: Recorder, status: int
) -> None:
    exporter = make_exporter(webhook, url=server.url, retries=3, backoff=0.01)
    server.statuses = [status]
    assert exporter.export(records(1)) is ExportResult.FAILURE
    assert len(server.received) == 1
    assert exporter.last_error.startswith(f"HTTP {status}")


def test_webhook_connection_refused_fails_within_its_budget(webhook: ModuleType) -> None:
    timeout, retries, backoff = 1.0, 2, 0.05
    exporter = make_exporter(
        webhook,
        url=f"http://127.0.0.1:{closed_port()}/logs",
        timeout=timeout,
        retries=retries,
        backoff=backoff,
    )
    started = time.monotonic()
    assert exporter.export(records(1)) is ExportResult.FAILURE
    elapsed = time.monotonic() - started
    assert elapsed < (retries + 1) * timeout + backoff * (2**retries - 1)
    assert exporter.attempts == retries + 1
    assert "refused" in exporter.last_error.lower()


def test_webhook_failure_hands_the_batch_to_the_fallback(webhook: ModuleType) -> None:
    exporter = make_exporter(webhook, url=f"http://127.0.0.1:{closed_port()}/", retries=1, backoff=0.01)
    fallback = InMemoryExporter()
    dispatcher = Dispatcher(exporter, name="webhook", fallback=fallback, batch_delay=0.01)
    batch = records(5)
    try:
        for record in batch:
            dispatcher.submit(record)
        assert dispatcher.force_flush(10.0)
    finally:
        dispatcher.shutdown(5.0)
    assert [r.id for r in fallback.records] == [r.id for r in batch]
    stats = dispatcher.stats()
    assert (stats.sent, stats.spilled, stats.failed) == (0, 5, 0)
    assert webhook.WebhookExporter.default_fallback == "file"


def test_webhook_shutdown_cuts_the_backoff_short(webhook: ModuleType, server: Recorder) -> None:
    exporter = make_exporter(webhook, url=server.url, retries=5, backoff=20.0)
    server.statuses = [500] * 10
    results: list[ExportResult] = []
    worker = threading.Thread(target=lambda: results.append(exporter.export(records(1))))
    worker.start()
    wait_until(lambda: server.received, timeout=10)
    started = time.monotonic()
    exporter.shutdown(1.0)
    worker.join(10)
    assert results == [ExportResult.FAILURE]
    assert time.monotonic() - started < 5
    assert len(server.received) == 1


def test_webhook_url_is_required(webhook: ModuleType) -> None:
    with pytest.raises(ConfigError, match="LOGPIPE_WEBHOOK_URL"):
        webhook.WebhookExporter(webhook.WebhookOptions())
    with pytest.raises(ConfigError, match="LOGPIPE_WEBHOOK_URL"):
        make_exporter(webhook, url="   ")


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"url": "ftp://example.com/logs"}, "LOGPIPE_WEBHOOK_URL"),
        ({"url": "http:///logs"}, "LOGPIPE_WEBHOOK_URL"),
        ({"url": "http://h/", "timeout": "0"}, "LOGPIPE_WEBHOOK_TIMEOUT"),
        ({"url": "http://h/", "retries": "-1"}, "LOGPIPE_WEBHOOK_RETRIES"),
        ({"url": "http://h/", "headers": "no colon here"}, "LOGPIPE_WEBHOOK_HEADERS"),
    ],
)
def test_webhook_rejects_bad_settings(webhook: ModuleType, settings: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        make_exporter(webhook, **settings)


def test_webhook_settings_come_from_the_environment(webhook: ModuleType) -> None:
    environ = {
        "LOGPIPE_WEBHOOK_URL": "https://user:pw@logs.example.com:8443/in?token=s3cret",
        "LOGPIPE_WEBHOOK_TIMEOUT": "2.5",
        "LOGPIPE_WEBHOOK_RETRIES": "0",
    }
    options = config.load(webhook.WebhookOptions, plugins.options_prefix("webhook"), environ=environ)
    exporter = webhook.WebhookExporter(options)
    assert (options.timeout, options.retries) == (2.5, 0)
    assert exporter.describe() == "webhook POST https://logs.example.com:8443/in"  # no credentials


# -- the plugin pip-installed into a fresh virtualenv -------------------------------------


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would leak the dev venv in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", COLUMNS="200")
    env.update(extra)
    return env


def _run(args: list[Any], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv (no system site-packages) with logpipe and logpipe-webhook pip-installed."""
    venv = tmp_path_factory.mktemp("plugin") / "venv"
    env = _clean_env()
    _run([sys.executable, "-m", "venv", venv], timeout=120, env=env)
    # One pip call for both, so the plugin's "logpipe" requirement resolves to this checkout.
    _run([_bin(venv, "python"), "-m", "pip", "install", "-q", REPO, PLUGIN], timeout=540, env=env)
    return venv


LOG_ONE = (
    "import structlog, logpipe; structlog.configure(processors=logpipe.processors()); "
    "structlog.get_logger().info('hello plugin', n=1)"
)


@pytest.mark.slow
def test_installed_webhook_plugin_delivers_a_record(plugin_venv: Path, server: Recorder, tmp_path: Path) -> None:
    env = _clean_env(LOGPIPE_EXPORTER="webhook", LOGPIPE_WEBHOOK_URL=server.url)
    done = _run([_bin(plugin_venv, "python"), "-c", LOG_ONE], timeout=60, env=env, cwd=tmp_path)
    assert "logpipe:" not in done.stderr, done.stderr

    wait_until(server.lines, timeout=15)
    [line] = server.lines()  # exactly one NDJSON line
    doc = json.loads(line)
    assert tuple(doc) == WIRE_KEYS
    assert doc["Msg"] == "hello plugin"
    assert doc["Field"] == {"n": 1}
    assert doc["Type"] == "info"
    [request] = server.received
    assert request.path == "/logs"
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert not (tmp_path / "logs").exists()  # nothing went to the file fallback


@pytest.mark.slow
def test_installed_webhook_plugin_is_listed_by_the_cli(plugin_venv: Path, tmp_path: Path) -> None:
    listing = _run([_bin(plugin_venv, "logpipe"), "exporters", "--no-settings"], timeout=60, env=_clean_env())
    assert "webhook" in listing.stdout
    assert "logpipe-webhook" in listing.stdout  # the distribution that provides it
    assert "LOGPIPE_WEBHOOK_URL" not in listing.stdout

    full = _run([_bin(plugin_venv, "logpipe"), "exporters"], timeout=60, env=_clean_env())
    assert "LOGPIPE_WEBHOOK_URL" in full.stdout
    assert "LOGPIPE_WEBHOOK_RETRIES" in full.stdout


@pytest.mark.slow
def test_installed_webhook_plugin_without_url_is_a_config_error(plugin_venv: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(_bin(plugin_venv, "python")), "-c", LOG_ONE],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(LOGPIPE_EXPORTER="webhook"),
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "ConfigError" in done.stderr
    assert "LOGPIPE_WEBHOOK_URL" in done.stderr
