"""logpipe-webhook: a third-party logpipe exporter that POSTs batches over HTTP.

Each batch becomes one ``POST`` whose body is NDJSON (JSON Lines): one KafkaLog
object per line, exactly the bytes logpipe encoded, ``Content-Type:
application/x-ndjson``. Only the standard library is used (``urllib``).

Install it next to logpipe and select it by name::

    pip install ./plugins/logpipe-webhook
    LOGPIPE_EXPORTER=webhook LOGPIPE_WEBHOOK_URL=http://127.0.0.1:8080/logs python app.py

Delivery: a 2xx answer is success. Connection errors, timeouts, 408, 429 and
5xx answers are retried ``retries`` times, waiting ``backoff`` seconds before
the first retry and twice as long before each next one (with jitter). When
that budget runs out, or the answer is another 3xx/4xx (redirects are not
followed: a redirected POST would silently lose its body), `export` returns
`ExportResult.FAILURE` and logpipe hands the batch to the fallback exporter
(by default the local ``file`` exporter).

The worst time one batch can take is about
``(retries + 1) * timeout + backoff * (2 ** retries - 1)`` seconds; calling
`WebhookExporter.shutdown` cuts any backoff wait short.
"""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from logpipe import Record
from logpipe.exporters import Backoff, ConfigError, Exporter, ExportResult, at_least, setting

__all__ = ["CONTENT_TYPE", "WebhookExporter", "WebhookOptions"]

__version__ = "0.1.0"

#: The media type of the request bodies.
CONTENT_TYPE = "application/x-ndjson"

#: No single wait between attempts is longer than this many seconds.
MAX_BACKOFF = 30.0

_URL_VAR = "LOGPIPE_WEBHOOK_URL"
_HEADERS_VAR = "LOGPIPE_WEBHOOK_HEADERS"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


@dataclass(frozen=True)
class WebhookOptions:
    """Settings of the ``webhook`` exporter (``LOGPIPE_WEBHOOK_*``)."""

    url: str = setting("", "http(s) URL each batch is POSTed to as NDJSON (required).")
    timeout: float = setting(
        5.0, "Seconds to wait for the connection and for each read of the answer.", check=_positive
    )
    retries: int = setting(
        3, "Further attempts after a connection error, timeout, 408, 429 or 5xx.", check=at_least(0)
    )
    backoff: float = setting(
        0.5, "Seconds before the first retry; doubled for each next one (with jitter).", check=at_least(0)
    )
    headers: tuple[str, ...] = setting((), "Extra request headers as a comma list of 'Name: value'.")


class WebhookExporter(Exporter):
    """POSTs each batch as NDJSON to ``LOGPIPE_WEBHOOK_URL``, retrying transient errors."""

    Options = WebhookOptions
    options: WebhookOptions
    #: A network destination: when it is down, keep records on local disk.
    default_fallback = "file"

    def __init__(self, options: WebhookOptions | None = None) -> None:
        super().__init__(options)
        self.url = _check_url(self.options.url)
        self.headers = {"Content-Type": CONTENT_TYPE, "User-Agent": f"logpipe-webhook/{__version__}"}
        self.headers.update(_parse_headers(self.options.headers))
        #: Why the last failed attempt failed (for humans and tests); None after a success.
        self.last_error: str | None = None
        #: HTTP requests sent so far, including retries.
        self.attempts = 0
        self._opener = urllib.request.build_opener(_NoRedirects())
        self._closing = threading.Event()

    def export(self, batch: Sequence[Record]) -> ExportResult:
        if not batch:
            return ExportResult.SUCCESS
        body = b"".join([r.payload + b"\n" for r in batch])
        o = self.options
        backoff = Backoff(o.backoff, max(o.backoff, MAX_BACKOFF), jitter=0.5, stop=self._closing)
        for attempt in range(o.retries + 1):
            if attempt and not backoff.wait():
                break  # shutting down: let the fallback have the batch now
            retry = self._post(body)
            if retry is None:
                self.last_error = None
                return ExportResult.SUCCESS
            if not retry:
                break
        return ExportResult.FAILURE

    def shutdown(self, timeout: float = 10.0) -> None:
        self._closing.set()

    def after_fork(self) -> None:
        self._closing = threading.Event()

    def describe(self) -> str:
        # Leave out credentials and the query string, which often carry tokens.
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return f"webhook POST {parts.scheme}://{host}{parts.path or '/'}"

    # -- internals ------------------------------------------------------------

    def _post(self, body: bytes) -> bool | None:
        """Send one request: None on success, else whether a retry may help."""
        self.attempts += 1
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.options.timeout) as response:
                response.read()
            return None
        except urllib.error.HTTPError as exc:
            exc.close()
            self.last_error = f"HTTP {exc.code} {exc.reason}"
            return exc.code in (408, 429) or exc.code >= 500
        except (OSError, http.client.HTTPException) as exc:
            # URLError (refused, DNS), TimeoutError, ConnectionResetError, RemoteDisconnected...
            reason: Any = getattr(exc, "reason", exc)
            self.last_error = f"{type(exc).__name__}: {reason}"
            return True


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turn 3xx answers into errors: urllib would re-send a POST as a bodiless GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _check_url(url: str) -> str:
    url = url.strip()
    if not url:
        raise ConfigError(f"{_URL_VAR} is required, e.g. {_URL_VAR}=http://127.0.0.1:8080/logs")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{_URL_VAR}={url!r}: expected an http:// or https:// URL with a host")
    return url


def _parse_headers(entries: Sequence[str]) -> dict[str, str]:
    headers = {}
    for entry in entries:
        name, sep, value = (part.strip() for part in entry.partition(":"))
        if not sep or not name or any(c.isspace() for c in name) or any(c in value for c in "\r\n"):
            raise ConfigError(f"{_HEADERS_VAR}: {entry!r} is not a 'Name: value' header")
        headers[name] = value
    return headers
