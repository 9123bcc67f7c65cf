"""``logpipe search``: find records from the terminal, in Elasticsearch or in the file exporter's files.

Where it looks: Elasticsearch when one is configured (``--hosts`` or
``LOGPIPE_ELASTICSEARCH_HOSTS`` set), else the JSON Lines files of the file
exporter (``LOGPIPE_FILE_PATH``, default ``logs/logpipe.jsonl``, and its
rotated siblings), so the embedded default is searchable with no server;
``--files GLOB`` picks files explicitly. How records look is `render`'s job.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import click
import orjson
from rich.console import Console

from .. import config, filesearch
from .. import elasticsearch as es
from ..exceptions import ConfigError
from ..exporters.file import FileOptions
from .render import Renderer, Template

__all__ = ["FOLLOW_OVERLAP_MS", "build_query", "search", "time_bound"]

#: With --follow, each poll on Elasticsearch looks this far back before the newest record shown, and
#: skips the Ids it already printed: a record whose Time is a little older than one already shown
#: (another host's clock, a shipper a few seconds behind, the 1 s refresh) is still printed, once.
FOLLOW_OVERLAP_MS = 5_000
#: Hits fetched per request while following (search_after pages through more).
FOLLOW_PAGE = 1_000

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
@click.option("--follow", "-f", is_flag=True, help="Keep printing new matching records as they arrive (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw KafkaLog JSON, one record per line.")
@click.option(
    "--format",
    "template",
    metavar="TEMPLATE",
    help="One line per record from KafkaLog keys, e.g. '{Time} {Type} {Msg}'; {Field} is key=value, {Field[k]} one.",
)
@click.option(
    "--files",
    metavar="GLOB",
    help="Search these JSON Lines files instead of Elasticsearch (default when no Elasticsearch is configured: "
    "LOGPIPE_FILE_PATH, logs/logpipe.jsonl, and its rotated files).",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05),
    help="Seconds between polls with --follow.",
)
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
    follow: bool,
    as_json: bool,
    template: str | None,
    files: str | None,
    interval: float,
    hosts: str | None,
    index_prefix: str | None,
) -> None:
    """Search logged records by TEXT (words of Msg) and filters; oldest of the shown records first.

    Searches Elasticsearch when one is configured (--hosts or
    LOGPIPE_ELASTICSEARCH_HOSTS), otherwise the file exporter's JSON Lines
    files; --files GLOB searches given files. On a terminal each record is
    one line wrapped to the width; piped, one plain line per record.
    """
    write = _writer(as_json, template)
    if files is not None or not es_configured(hosts):
        source: _Source = _FileSource(
            files, text, phrase, since, until, levels, services, trace_id, explicit=files is not None
        )
    else:
        source = _EsSource(hosts, index_prefix, text, phrase, since, until, levels, services, trace_id)
    try:
        for doc in source.first(size, quiet_empty=follow):
            write(doc)
        _flush()
        while follow:
            time.sleep(interval)  # the poll period, not a wait for something to happen
            for doc in source.poll():
                write(doc)
            _flush()
    except KeyboardInterrupt:
        return  # Ctrl-C is how --follow ends: no traceback, no "Aborted!"
    except BrokenPipeError:
        _quiet_stdout()  # `| head`: the reader has had enough


def es_configured(hosts: str | None, environ: Any = None) -> bool:
    """True when the user named an Elasticsearch: ``--hosts`` or ``LOGPIPE_ELASTICSEARCH_HOSTS`` (non-empty).

    Why not the setting's default (``http://127.0.0.1:9200``): a default
    cannot tell "I run a node there" from "I never thought about it", and the
    embedded default (the file exporter) needs no server at all.
    """
    environ = os.environ if environ is None else environ
    return bool(hosts) or bool(environ.get(f"{es.ENV_PREFIX}HOSTS", "").strip())


def _writer(as_json: bool, template: str | None) -> Callable[[dict[str, Any]], None]:
    """The function that prints one record: JSON, a template, or the renderer for people."""
    if as_json and template:
        raise click.UsageError("--json and --format are alternatives: give one")
    if as_json:
        out = sys.stdout.buffer

        def write_json(doc: dict[str, Any]) -> None:
            out.write(orjson.dumps(doc) + b"\n")

        return write_json
    if template is not None:
        try:
            layout = Template(template)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--format") from None
        return lambda doc: click.echo(layout.render(doc))
    renderer = Renderer(Console(highlight=False))
    return renderer.print


def _flush() -> None:
    sys.stdout.flush()


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so Python's exit flush does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _matches(total: int, relation: str, shown: int, where: str) -> None:
    click.echo(f"{total}{'+' if relation == 'gte' else ''} match(es), showing {shown} ({where})", err=True)


class _Source:
    """Where records come from: `first` for the initial search, `poll` for what arrived since (--follow)."""

    def first(self, size: int, *, quiet_empty: bool = False) -> list[dict[str, Any]]:
        raise NotImplementedError

    def poll(self) -> list[dict[str, Any]]:
        raise NotImplementedError


class _FileSource(_Source):
    """The file exporter's JSON Lines files, streamed (see `logpipe.filesearch`)."""

    def __init__(
        self,
        pattern: str | None,
        text: str | None,
        phrase: bool,
        since: str,
        until: str | None,
        levels: tuple[str, ...],
        services: tuple[str, ...],
        trace_id: str | None,
        *,
        explicit: bool,
    ) -> None:
        if pattern is None:
            try:
                options = config.load(FileOptions, "LOGPIPE_FILE_")
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from exc
            pattern = filesearch.default_files(options.path)
        self.pattern = pattern
        self.explicit = explicit
        try:
            self.query = filesearch.Query(
                text=text,
                phrase=phrase,
                since=None if since.strip().lower() == "all" else filesearch.parse_bound(since, "--since"),
                until=filesearch.parse_bound(until, "--until") if until else None,
                levels=levels,
                services=services,
                trace_id=trace_id,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        self.follower: filesearch.FileFollower | None = None

    def first(self, size: int, *, quiet_empty: bool = False) -> list[dict[str, Any]]:
        if not filesearch.ordered(self.pattern) and not quiet_empty:
            hint = "" if self.explicit else " (no Elasticsearch configured: set --hosts or LOGPIPE_ELASTICSEARCH_HOSTS)"
            raise click.ClickException(f"no file matches {self.pattern}{hint}")
        docs, total, self.follower = filesearch.search_files(self.pattern, self.query, size)
        note = "" if self.explicit else "; no Elasticsearch configured"
        _matches(total, "eq", len(docs), f"files {self.pattern}{note}")
        return docs

    def poll(self) -> list[dict[str, Any]]:
        assert self.follower is not None
        return filesearch.sort_docs(self.follower.poll())


class _EsSource(_Source):
    """The ``<prefix>-*`` indices; following pages with ``search_after`` on (Time, Id)."""

    def __init__(
        self,
        hosts: str | None,
        index_prefix: str | None,
        text: str | None,
        phrase: bool,
        since: str,
        until: str | None,
        levels: tuple[str, ...],
        services: tuple[str, ...],
        trace_id: str | None,
    ) -> None:
        overrides: dict[str, Any] = {}
        if hosts:
            overrides["hosts"] = hosts
        if index_prefix:
            overrides["index_prefix"] = index_prefix
        try:
            self.options = config.load(es.ElasticsearchOptions, es.ENV_PREFIX, overrides)
            es.check_options(self.options)
        except ConfigError as exc:
            message = (
                str(exc).replace("argument 'hosts'", "--hosts").replace("argument 'index_prefix'", "--index-prefix")
            )
            raise click.UsageError(message) from exc
        self.query = build_query(
            text,
            since=None if since.strip().lower() == "all" else time_bound(since, "--since"),
            until=time_bound(until, "--until") if until else None,
            levels=levels,
            services=services,
            trace_id=trace_id,
            phrase=phrase,
        )
        #: Newest (Time ms, Id) printed; Ids printed within FOLLOW_OVERLAP_MS of it, with their Time.
        self.cursor: list[Any] = [int(datetime.now(timezone.utc).timestamp() * 1000), ""]
        self.seen: dict[str, int] = {}

    def first(self, size: int, *, quiet_empty: bool = False) -> list[dict[str, Any]]:
        response = self._search(size=size, sort=_sort("desc"), track_total_hits=True)
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        hits.reverse()  # fetched newest first; read top to bottom like a log
        total = response["hits"]["total"]
        _matches(total["value"], total["relation"], len(hits), f"{es.index_pattern(self.options.index_prefix)}")
        self._remember(hits)
        return [hit["_source"] for hit in hits]

    def poll(self) -> list[dict[str, Any]]:
        """Hits sorted after (newest shown Time - overlap, ""), minus the Ids already printed."""
        after: list[Any] = [self.cursor[0] - FOLLOW_OVERLAP_MS, ""]
        fresh: list[dict[str, Any]] = []
        while True:
            response = self._search(size=FOLLOW_PAGE, sort=_sort("asc"), search_after=after, track_total_hits=False)
            hits = response["hits"]["hits"]
            fresh.extend(hit for hit in hits if hit["_id"] not in self.seen)
            if len(hits) < FOLLOW_PAGE:
                break
            after = hits[-1]["sort"]
        self._remember(fresh)
        return [hit["_source"] for hit in fresh]

    def _remember(self, hits: list[dict[str, Any]]) -> None:
        for hit in hits:
            key = hit.get("sort") or self.cursor
            self.seen[hit["_id"]] = int(key[0])
            if list(key) > self.cursor:
                self.cursor = [int(key[0]), str(key[1])]
        horizon = self.cursor[0] - FOLLOW_OVERLAP_MS
        if len(self.seen) > 1000 or any(t < horizon for t in self.seen.values()):
            self.seen = {i: t for i, t in self.seen.items() if t >= horizon}

    def _search(self, **kwargs: Any) -> Any:
        from elasticsearch import ApiError, TransportError

        client = getattr(self, "_client", None) or es.make_client(self.options)
        self._client = client
        try:
            return client.search(
                index=es.index_pattern(self.options.index_prefix),
                query=self.query,
                ignore_unavailable=True,
                allow_no_indices=True,
                **kwargs,
            )
        except ApiError as exc:
            raise click.ClickException(f"Elasticsearch refused the search: {es.failure(exc)}") from exc
        except TransportError as exc:
            raise click.ClickException(
                f"cannot reach Elasticsearch at {','.join(self.options.hosts)} "
                f"(--hosts / LOGPIPE_ELASTICSEARCH_HOSTS): {es.failure(exc)}"
            ) from exc


def _sort(order: str) -> list[dict[str, Any]]:
    """Time, then Id: a total order, so search_after neither skips nor repeats records with equal Times."""
    return [
        {"Time": {"order": order, "unmapped_type": "date"}},
        {"Id": {"order": order, "unmapped_type": "keyword"}},
    ]
