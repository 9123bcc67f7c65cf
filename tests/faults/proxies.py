"""Fault-injecting stand-ins on 127.0.0.1 in front of the real servers of the test session.

* `FaultyElasticsearch`: an HTTP reverse proxy before the real node. Everything is forwarded as it
  came, except ``_bulk`` requests while a fault is on: it then answers them itself, the way an
  overloaded or recovering node does (429 ``es_rejected_execution_exception`` or 503 for the whole
  request), or forwards only half of the documents and answers the other half with per-item 429s
  inside a 200 answer, which is what a node whose write queue is full does.
* `TcpGate`: a port that refuses connections until it is opened, then forwards them to a real
  server: a Kafka bootstrap address that is "down" until the test starts it, without touching the
  shared broker.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import orjson
import urllib3

__all__ = ["Fault", "FaultyElasticsearch", "TcpGate"]

#: What `FaultyElasticsearch` does to ``_bulk`` while a fault is on.
Fault = Literal["429", "503", "items-429"]

#: elasticsearch-py 8 refuses a successful answer without this header.
_PRODUCT = ("X-Elastic-Product", "Elasticsearch")

_WHOLE: dict[str, dict[str, Any]] = {
    "429": {
        "error": {
            "type": "es_rejected_execution_exception",
            "reason": "rejected execution of coordinating operation [write queue full]",
        },
        "status": 429,
    },
    "503": {
        "error": {"type": "master_not_discovered_exception", "reason": "no master node (the test proxy says so)"},
        "status": 503,
    },
}

_ITEM_429 = {
    "status": 429,
    "error": {
        "type": "es_rejected_execution_exception",
        "reason": "rejected execution of primary operation [write queue full]",
    },
}

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class FaultyElasticsearch:
    """A threaded HTTP proxy to *upstream* whose ``_bulk`` answers a test can spoil (see the module docstring).

    Counters (read them any time): ``bulk_requests`` that reached the proxy, ``spoiled`` of them
    (refused as a whole or in part), ``refused_requests`` answered 429/503 as a whole,
    ``refused_items`` answered 429 inside a 200, ``forwarded_items`` (of the requests refused in part).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._http = urllib3.PoolManager(maxsize=16, retries=False, timeout=urllib3.Timeout(connect=5, read=60))
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self.bulk_requests = self.spoiled = self.refused_requests = self.refused_items = self.forwarded_items = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-es", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def inject(self, fault: Fault | None) -> None:
        """From now on, spoil every ``_bulk`` answer with *fault* (None: forward everything again)."""
        with self._lock:
            self._fault = fault

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.clear()

    # -- one request ------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        path = request.path
        fault = None
        if path.split("?", 1)[0].endswith("/_bulk") and request.command in ("POST", "PUT"):
            with self._lock:
                self.bulk_requests += 1
                fault = self._fault
                self.spoiled += fault is not None
        if fault in _WHOLE:
            with self._lock:
                self.refused_requests += 1
            self._answer(request, int(fault), orjson.dumps(_WHOLE[fault]), {})  # type: ignore[index]
        elif fault == "items-429":
            self._half_refused(request, path, body)
        else:
            status, data, headers = self._forward(request, path, body)
            self._answer(request, status, data, headers)

    def _forward(self, request: BaseHTTPRequestHandler, path: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        reply = self._http.request(
            request.command, self.upstream + path, body=body or None, headers=headers, preload_content=True
        )
        kept = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP}
        return reply.status, reply.data, kept

    def _half_refused(self, request: BaseHTTPRequestHandler, path: str, body: bytes) -> None:
        """Forward the even documents of a bulk of ``create`` pairs; answer the odd ones 429 in a 200."""
        lines = body.splitlines()
        pairs = [lines[i : i + 2] for i in range(0, len(lines), 2)]
        kept = [pair for position, pair in enumerate(pairs) if position % 2 == 0]
        answered: list[Any] = []
        if kept:
            status, data, _ = self._forward(request, path, b"\n".join(line for pair in kept for line in pair) + b"\n")
            if status != 200:
                self._answer(request, status, data, {})
                return
            answered = orjson.loads(data).get("items", [])
        items = []
        for position in range(len(pairs)):
            if position % 2 == 0:
                items.append(answered[position // 2])
            else:
                items.append({"create": _ITEM_429})
        with self._lock:
            self.refused_items += len(pairs) - len(kept)
            self.forwarded_items += len(kept)
        self._answer(request, 200, orjson.dumps({"errors": True, "items": items}), {})

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]) -> None:
        request.send_response(status)
        present = {key.lower() for key in headers}
        for key, value in (("Content-Type", "application/json"), _PRODUCT):
            if key.lower() not in present:
                headers = {**headers, key: value}
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)


class TcpGate:
    """A loopback port that refuses connections until `open`, then pipes each one to *upstream* (``host:port``)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused at once
        self._sockets: list[socket.socket] = []
        self._closed = False

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def open(self) -> None:
        self._listener.listen(64)
        threading.Thread(target=self._accept, name="tcp-gate", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream, timeout=10)
            server.settimeout(None)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
