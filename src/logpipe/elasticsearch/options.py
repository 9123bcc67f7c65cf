"""How to reach Elasticsearch: `ElasticsearchOptions` (``LOGPIPE_ELASTICSEARCH_*``), their checks, `make_client`.

Shared by the direct exporter, ``logpipe ship`` and ``logpipe search``, so
that every path into Elasticsearch authenticates, verifies TLS and times out
alike. The client library is imported lazily: reading options costs nothing
when Elasticsearch is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ..backoff import Backoff
from ..config import Secret, at_least, reveal, setting
from ..exceptions import ConfigError

if TYPE_CHECKING:
    import threading

    from elasticsearch import Elasticsearch

__all__ = ["ENV_PREFIX", "ElasticsearchOptions", "FieldMapping", "backoff", "check_options", "make_client"]

#: Where `ElasticsearchOptions` are read from.
ENV_PREFIX = "LOGPIPE_ELASTICSEARCH_"

#: How the free-form ``Field`` object is mapped; see `logpipe.elasticsearch.template.index_template`.
FieldMapping = Literal["flattened", "dynamic", "object-disabled"]

_BAD_PREFIX_CHARS = set('\\/*?"<>| ,#:')

#: The shortest first retry delay: ``BACKOFF=0`` means "retry at once", which `Backoff` spells as this.
_MIN_BACKOFF = 0.001


def _check_prefix(prefix: str) -> str | None:
    if not prefix:
        return "must not be empty"
    if prefix != prefix.lower():
        return "index names must be lower case"
    if prefix[0] in "-_+" or prefix in (".", ".."):
        return "must not start with -, _ or + (nor be . or ..)"
    bad = sorted(_BAD_PREFIX_CHARS & set(prefix))
    if bad:
        return f"must not contain {' '.join(repr(c) for c in bad)}"
    if len(prefix.encode()) > 200:
        return "is too long (index names are limited to 255 bytes)"
    return None


def _check_hosts(hosts: tuple[str, ...]) -> str | None:
    if not hosts:
        return "needs at least one URL, e.g. http://127.0.0.1:9200"
    for host in hosts:
        if "://" not in host:
            return f"{host!r} needs a scheme, e.g. http://{host} or https://{host}"
        try:
            url = urlsplit(host)
            port = url.port
        except ValueError as exc:
            return f"{host!r} is not a URL ({exc})"
        if url.scheme not in ("http", "https") or not url.hostname:
            return f"{host!r}: expected http://HOST:PORT or https://HOST[:PORT]"
        if port is None and url.scheme == "http":
            return f"{host!r} needs a port, e.g. {host.rstrip('/')}:9200"
    return None


@dataclass(frozen=True)
class ElasticsearchOptions:
    """How to reach Elasticsearch and how logpipe's indices look (``LOGPIPE_ELASTICSEARCH_*``)."""

    hosts: tuple[str, ...] = setting(
        ("http://127.0.0.1:9200",),
        "Node URLs, comma list (scheme required: http:// or https://).",
        check=_check_hosts,
    )
    index_prefix: str = setting(
        "logpipe", "Daily indices are <prefix>-YYYY.MM.dd (event time, UTC).", check=_check_prefix
    )
    api_key: Secret | None = setting(
        None, "API key (the base64 'id:api_key' form); wins over username (never printed)."
    )
    username: str | None = setting(None, "Basic auth user (needs PASSWORD).")
    password: Secret | None = setting(None, "Basic auth password (never printed).")
    ca_certs: Path | None = setting(None, "CA bundle (PEM) to verify https:// nodes with.")
    verify_certs: bool = setting(True, "Verify TLS certificates (false only for throwaway clusters).")
    timeout: float = setting(10.0, "Seconds one HTTP request may take.", check=at_least(0.1))
    chunk_size: int = setting(500, "Most documents in one bulk request.", check=at_least(1))
    max_chunk_bytes: int = setting(
        10 * 1024 * 1024,
        "Most bytes in one bulk request (keep well under http.max_content_length).",
        check=at_least(1024),
    )
    max_retries: int = setting(
        3,
        "Retries of a bulk request or item that failed with 429/5xx or a connection error.",
        check=at_least(0),
    )
    backoff: float = setting(0.5, "Seconds before the first retry; doubles each retry.", check=at_least(0))
    max_backoff: float = setting(30.0, "Longest wait between two retries, in seconds.", check=at_least(0))
    analyzer: str = setting(
        "standard", "Analyzer of Msg: standard, smartcn (Chinese), ik_smart/ik_max_word (IK plugin) ..."
    )
    search_analyzer: str | None = setting(None, "Search-time analyzer of Msg (default: the analyzer).")
    field_mapping: FieldMapping = setting(
        "flattened", "How Field is mapped: flattened, dynamic (object) or object-disabled (not indexed)."
    )
    replicas: int = setting(1, "number_of_replicas of new daily indices (0 on a one-node cluster).", check=at_least(0))
    shards: int = setting(1, "number_of_shards of new daily indices.", check=at_least(1))
    ilm_policy: str | None = setting(
        None, "ILM policy new daily indices follow (index.lifecycle.name); create the policy first."
    )
    install_template: bool = setting(True, "Create/update the index template <prefix>-* before the first write.")


def check_options(options: ElasticsearchOptions, prefix: str = ENV_PREFIX) -> None:
    """Raise `ConfigError` for combinations no single setting's check can see."""
    if options.username and options.password is None:
        raise ConfigError(f"{prefix}USERNAME is set but {prefix}PASSWORD is not")
    if options.password is not None and not options.username:
        raise ConfigError(f"{prefix}PASSWORD is set but {prefix}USERNAME is not")
    if options.ca_certs is not None and not Path(options.ca_certs).is_file():
        raise ConfigError(f"{prefix}CA_CERTS={str(options.ca_certs)!r}: no such file")
    if options.max_backoff < options.backoff:
        raise ConfigError(f"{prefix}MAX_BACKOFF must be at least {prefix}BACKOFF ({options.backoff})")


def backoff(options: ElasticsearchOptions, stop: threading.Event | None = None) -> Backoff:
    """The retry delays ``BACKOFF`` .. ``MAX_BACKOFF`` as a `Backoff` (interrupted by *stop*)."""
    initial = max(options.backoff, _MIN_BACKOFF)
    return Backoff(initial, max(initial, options.max_backoff), stop=stop)


def make_client(options: ElasticsearchOptions) -> Elasticsearch:
    """An `Elasticsearch` client for *options*.

    The transport's own retries are immediate (no backoff), so they are used
    only to fail over to another node (``max_retries = len(hosts) - 1``) and
    never for status codes; waiting and retrying is the caller's job (with a
    `Backoff`, see `logpipe.elasticsearch.bulk.deliver`).
    """
    from elasticsearch import Elasticsearch

    kwargs: dict[str, Any] = {
        "request_timeout": options.timeout,
        "max_retries": max(len(options.hosts) - 1, 0),
        "retry_on_status": (),
        "retry_on_timeout": len(options.hosts) > 1,
    }
    if options.api_key:
        kwargs["api_key"] = reveal(options.api_key)
    elif options.username:
        kwargs["basic_auth"] = (options.username, reveal(options.password) or "")
    if any(h.lower().startswith("https://") for h in options.hosts):
        if options.ca_certs is not None:
            kwargs["ca_certs"] = str(options.ca_certs)
        if not options.verify_certs:
            kwargs["verify_certs"] = False
            kwargs["ssl_show_warn"] = False
    return Elasticsearch(list(options.hosts), **kwargs)
