"""``logpipe kibana import``: load the data view, searches and dashboard for ``<prefix>-*`` into Kibana."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import config
from .. import elasticsearch as es
from .. import kibana as kb
from ..exceptions import ConfigError
from ..health import redact

__all__ = ["kibana"]

#: Setting -> the flag that sets it, so errors name what the user typed.
_FLAGS = {
    "url": "URL",
    "space": "--space",
    "ca_certs": "--ca-certs",
    "index_prefix": "--index-prefix",
}


@click.group()
def kibana() -> None:
    """Kibana objects for logpipe's indices."""


@kibana.command("import")
@click.argument("url", required=False)
@click.option("--space", help="Kibana space id (default: the default space) [LOGPIPE_KIBANA_SPACE].")
@click.option("--index-prefix", help="Data view on <prefix>-* [LOGPIPE_ELASTICSEARCH_INDEX_PREFIX].")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="NDJSON saved objects to import instead of logpipe's own (deploy/kibana/logpipe.ndjson).",
)
@click.option("--ca-certs", help="CA bundle (PEM) for an https:// Kibana [LOGPIPE_KIBANA_CA_CERTS].")
@click.option(
    "--insecure",
    is_flag=True,
    help="Do not verify Kibana's TLS certificate (throwaway setups only) [LOGPIPE_KIBANA_VERIFY_CERTS=false].",
)
@click.option("--no-overwrite", is_flag=True, help="Keep objects that already exist (default: replace them).")
def import_command(
    url: str | None,
    space: str | None,
    index_prefix: str | None,
    path: Path | None,
    ca_certs: str | None,
    insecure: bool,
    no_overwrite: bool,
) -> None:
    """Import the data view (time field Time), saved searches and dashboard into Kibana at URL.

    URL defaults to LOGPIPE_KIBANA_URL (http://127.0.0.1:5601). Credentials
    come from LOGPIPE_KIBANA_API_KEY or LOGPIPE_KIBANA_USERNAME / _PASSWORD
    (never from the command line, where other users could read them).
    Existing objects with the same ids are replaced unless --no-overwrite.
    """
    overrides: dict[str, Any] = {"url": url, "space": space, "ca_certs": ca_certs}
    if insecure:
        overrides["verify_certs"] = False
    options, prefix = _options({k: v for k, v in overrides.items() if v is not None}, index_prefix)
    if not options.verify_certs:
        click.secho(
            "WARNING: TLS certificate verification is OFF (--insecure / LOGPIPE_KIBANA_VERIFY_CERTS=false): "
            "anyone on the network path can read the credentials sent to Kibana.",
            err=True,
            fg="red",
            bold=True,
        )
    try:
        objects = kb.load_objects(path.read_bytes() if path else kb.packaged_objects())
    except ConfigError as exc:
        raise click.UsageError(f"--file {path}: {exc}") from exc
    objects = kb.with_index_prefix(objects, prefix)
    try:
        outcome = kb.import_objects(options, objects, overwrite=not no_overwrite)
    except kb.KibanaError as exc:
        raise click.ClickException(str(exc)) from exc
    shown = redact(options.url.rstrip("/"))
    where = f"space {options.space}" if options.space else "the default space"
    if outcome.errors:
        click.echo(f"Kibana at {shown} imported {outcome.success_count} object(s) and refused:", err=True)
        for line in outcome.errors:
            click.echo(f"  {redact(line)}", err=True)
        sys.exit(1)
    base = f"{shown}/s/{options.space}" if options.space and options.space != "default" else shown
    click.echo(f"imported {outcome.success_count} saved object(s) into Kibana at {shown} ({where})")
    click.echo(f"data view: {prefix}-* (time field Time)")
    click.echo(f"dashboard: {base}/app/dashboards#/view/logpipe-overview")


def _options(overrides: dict[str, Any], index_prefix: str | None) -> tuple[kb.KibanaOptions, str]:
    """Kibana's settings and the index prefix, with errors naming the flag or the variable."""
    try:
        options = config.load(kb.KibanaOptions, kb.ENV_PREFIX, overrides)
        kb.check_options(options)
        es_overrides = {"index_prefix": index_prefix} if index_prefix else {}
        prefix = config.load(es.ElasticsearchOptions, es.ENV_PREFIX, es_overrides).index_prefix
    except ConfigError as exc:
        message = str(exc)
        for name, flag in _FLAGS.items():
            message = message.replace(f"argument {name!r}", flag)
        raise click.UsageError(message) from exc
    return options, prefix
