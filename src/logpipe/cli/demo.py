"""``logpipe demo``: run the example application through the configured exporters."""

from __future__ import annotations

import click
import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from rich.console import Console
from rich.table import Table

from .. import demo as demo_app
from ..exceptions import ConfigError
from ..pipeline import configure


@click.command()
@click.option("--exporter", "-e", help="Exporter(s), comma list; default: LOGPIPE_EXPORTER or file.")
@click.option("--orders", default=3, show_default=True, help="Orders the example application handles.")
@click.option("--service", default="logpipe-demo", show_default=True, help="OpenTelemetry service name.")
def demo(exporter: str | None, orders: int, service: str) -> None:
    """Run an example application that logs through logpipe, then say where the records went."""
    console = Console()
    trace.set_tracer_provider(TracerProvider(resource=Resource.create({SERVICE_NAME: service})))
    try:
        pipeline = configure(exporter=exporter, local_render="none")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    structlog.configure(processors=pipeline.processors(), cache_logger_on_first_use=False)
    calls = demo_app.run(orders)
    pipeline.force_flush()
    stats = pipeline.stats()
    pipeline.shutdown()

    console.print(f"[bold]logpipe demo[/]: the example application made {calls} log calls.")
    table = Table(title="Delivery counters")
    for column in ("exporter", "sent", "spilled", "dropped", "failed"):
        table.add_column(column)
    for s in stats.values():
        table.add_row(s.exporter, str(s.sent), str(s.spilled), str(s.dropped), str(s.failed))
    console.print(table)
    console.print("[bold]Where the records went:[/]")
    for line in pipeline.describe():
        console.print(f"  {line}", soft_wrap=True, markup=False)
    lost = sum(s.dropped + s.failed for s in stats.values())
    if lost:
        raise SystemExit(f"logpipe demo: {lost} record(s) were not delivered")
