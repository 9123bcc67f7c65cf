"""``logpipe search``: find records in the ``<prefix>-*`` indices from the terminal."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from .. import config
from .. import elasticsearch as es
from ..exceptions import ConfigError

__all__ = ["build_query", "search", "time_bound"]

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")


def time_bound(value: str, flag: str) -> str:
    """``15m`` -> ``now-15m`` (Elasticsearch date math); ISO 8601 and ``now...`` pass through."""
    match = _DURATION.match(value)
    if match:
        return f"now-{match.group(1)}{match.group(2)}"
    text = value.strip()
    if text.startswith("now"):
        return text
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use a duration (30s, 15m, 2h, 7d, 1w), an ISO 8601 time or ES date math (now-1d/d)",
            param_hint=flag,
        ) from None
    return text


def build_query(
    text: str | None,
    *,
    since: str | None,
    until: str | None,
    levels: tuple[str, ...] = (),
    services: tuple[str, ...] = (),
    trace_id: str | None = None,
    phrase: bool = False,
) -> dict[str, Any]:
    """The ``bool`` query: full text on Msg (all words must match), filters on the rest."""
    must: list[dict[str, Any]] = []
    if text:
        if phrase:
            must.append({"match_phrase": {"Msg": text}})
        else:
            must.append({"match": {"Msg": {"query": text, "operator": "and"}}})
    filters: list[dict[str, Any]] = []
    if since or until:
        bounds: dict[str, str] = {}
        if since:
            bounds["gte"] = since
        if until:
            bounds["lte"] = until
        filters.append({"range": {"Time": bounds}})
    if levels:
        filters.append({"terms": {"Type": list(levels)}})
    if services:
        filters.append({"terms": {"Service": list(services)}})
    if trace_id:
        filters.append({"term": {"TraceId": trace_id}})
    return {"bool": {"must": must or [{"match_all": {}}], "filter": filters}}


@click.command()
@click.argument("text", required=False)
@click.option(
    "--since",
    default="15m",
    show_default=True,
    help="Oldest event: duration back from now (30s, 15m, 2h, 7d), ISO 8601 time or 'all'.",
)
@click.option("--until", help="Newest event: same forms as --since.")
@click.option("--level", "-l", "levels", multiple=True, help="Type (info, error, ...); repeatable.")
@click.option("--service", "-s", "services", multiple=True, help="Service name; repeatable.")
@click.option("--trace-id", help="Only records of this trace.")
@click.option("--phrase", is_flag=True, help="TEXT must appear as a phrase (words adjacent, in order).")
@click.option(
    "--size",
    "-n",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Most records shown (the newest ones).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw KafkaLog JSON, one record per line.")
@click.option("--hosts", help="Elasticsearch URLs, comma list [LOGPIPE_ELASTICSEARCH_HOSTS].")
@click.option("--index-prefix", help="Index prefix [LOGPIPE_ELASTICSEARCH_INDEX_PREFIX].")
def search(
    text: str | None,
    since: str,
    until: str | None,
    levels: tuple[str, ...],
    services: tuple[str, ...],
    trace_id: str | None,
    phrase: bool,
    size: int,
    as_json: bool,
    hosts: str | None,
    index_prefix: str | None,
) -> None:
    """Search logged records by TEXT (words of Msg) and filters; oldest of the shown records first."""
    overrides: dict[str, Any] = {}
    if hosts:
        overrides["hosts"] = hosts
    if index_prefix:
        overrides["index_prefix"] = index_prefix
    try:
        options = config.load(es.ElasticsearchOptions, es.ENV_PREFIX, overrides)
        es.check_options(options)
    except ConfigError as exc:
        message = str(exc).replace("argument 'hosts'", "--hosts").replace("argument 'index_prefix'", "--index-prefix")
        raise click.UsageError(message) from exc
    query = build_query(
        text,
        since=None if since.strip().lower() == "all" else time_bound(since, "--since"),
        until=time_bound(until, "--until") if until else None,
        levels=levels,
        services=services,
        trace_id=trace_id,
        phrase=phrase,
    )
    hits = _run(options, query, size)
    hits.reverse()  # fetched newest first; read top to bottom like a log
    if as_json:
        out = sys.stdout.buffer
        for hit in hits:
            out.write(orjson.dumps(hit["_source"]) + b"\n")
        out.flush()
        return
    _print_table(hits, options.index_prefix)


def _run(options: es.ElasticsearchOptions, query: dict[str, Any], size: int) -> list[dict[str, Any]]:
    from elasticsearch import ApiError, TransportError

    client = es.make_client(options)
    try:
        response = client.search(
            index=es.index_pattern(options.index_prefix),
            query=query,
            size=size,
            sort=[{"Time": {"order": "desc", "unmapped_type": "date"}}],
            ignore_unavailable=True,
            allow_no_indices=True,
            track_total_hits=True,
        )
    except ApiError as exc:
        raise click.ClickException(f"Elasticsearch refused the search: {es._error_text(exc.body) or exc}") from exc
    except TransportError as exc:
        raise click.ClickException(
            f"cannot reach Elasticsearch at {','.join(options.hosts)} (--hosts / LOGPIPE_ELASTICSEARCH_HOSTS): {exc}"
        ) from exc
    finally:
        client.close()
    hits: list[dict[str, Any]] = response["hits"]["hits"]
    total = response["hits"]["total"]
    click.echo(f"{total['value']}{'+' if total['relation'] == 'gte' else ''} match(es), showing {len(hits)}", err=True)
    return hits


def _print_table(hits: list[dict[str, Any]], prefix: str) -> None:
    table = Table(title=f"{prefix}-*", title_justify="left")
    table.add_column("Time", no_wrap=True)
    table.add_column("Type")
    table.add_column("Service")
    table.add_column("FuncName")
    table.add_column("Msg", overflow="fold")
    table.add_column("TraceId", no_wrap=True)
    styles = {"error": "red", "warning": "yellow", "critical": "bold red"}
    for hit in hits:
        doc = hit.get("_source", {})
        kind = str(doc.get("Type", ""))
        table.add_row(
            str(doc.get("Time", "")),
            kind,
            str(doc.get("Service", "")),
            str(doc.get("FuncName", "")),
            str(doc.get("Msg", "")),
            str(doc.get("TraceId", "")),
            style=styles.get(kind.lower()),
        )
    Console().print(table)
