"""A pipeline: the processor chain plus one dispatcher per configured exporter.

`configure` builds one from settings (arguments over ``LOGPIPE_*`` env vars)
and makes it the current pipeline, which `stats`, `flush` and `shutdown`
address and which is flushed at interpreter exit and on SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import multiprocessing.util
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog
from structlog.typing import Processor

from . import config, plugins
from .chain import FuncNameAdder, KafkaLogRenderer, ServiceName, add_trace_context
from .config import Settings
from .dispatch import Dispatcher, DispatchStats
from .exceptions import ConfigError
from .exporters.base import Exporter, Serialized
from .exporters.process import isolate
from .journal import JournalDispatcher, open_journal
from .record import Record
from .redact import Redactor
from .report import Reporter

__all__ = ["Pipeline", "configure", "current", "flush", "processors", "send", "shutdown", "stats"]

ExporterSpec = str | Exporter
#: One exporter's front: a queue and worker, or in durable mode a journal (`logpipe.journal`).
AnyDispatcher = Dispatcher | JournalDispatcher


class Pipeline:
    """Fans each record out to its dispatchers (one per exporter)."""

    def __init__(self, dispatchers: Sequence[AnyDispatcher], settings: Settings | None = None) -> None:
        if not dispatchers:
            raise ConfigError("LOGPIPE_EXPORTER: at least one exporter is needed")
        self.dispatchers = tuple(dispatchers)
        self.settings = settings or Settings()
        self._closed = False
        self._ingest_chain: list[Processor] | None = None
        _live.add(self)

    def submit(self, record: Record) -> None:
        """Queue *record* on every dispatcher; never blocks on the network."""
        for dispatcher in self.dispatchers:
            dispatcher.submit(record)

    def processors(self, *, func_name_ignores: list[str] | None = None) -> list[Processor]:
        """The structlog chain that ends in this pipeline."""
        submit: Any = self.dispatchers[0].submit if len(self.dispatchers) == 1 else self.submit
        return chain_processors(self.settings, submit, func_name_ignores=func_name_ignores)

    def ingest(self, method_name: str, event_dict: dict[str, Any]) -> None:
        """Log *event_dict* through this pipeline's chain, from outside structlog.

        For records made elsewhere (stdlib `logging`, OpenTelemetry): the
        same processors as a structlog call (redaction, trace context, the
        renderer), nothing rendered locally. ``event`` is the message;
        ``_record`` a `logging.LogRecord` (for FuncName), ``_ts`` the time
        the record was made, ``FuncName``/``TraceId``/``SpanId`` win when given.
        """
        chain = self._ingest_chain
        if chain is None:
            quiet = dataclasses.replace(self.settings, local_render="none")
            chain = self._ingest_chain = chain_processors(quiet, self.submit)
        event: Any = event_dict
        try:
            for processor in chain:
                event = processor(None, method_name, event)
        except structlog.DropEvent:
            pass

    def stats(self) -> dict[str, DispatchStats]:
        return {d.name: d.stats() for d in self.dispatchers}

    def force_flush(self, timeout: float | None = None) -> bool:
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        return all([d.force_flush(timeout) for d in self.dispatchers])

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush and stop every dispatcher; later records are counted as dropped."""
        if self._closed:
            return
        self._closed = True
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        # Sequential, not one thread each: Python 3.12+ refuses new threads in atexit hooks.
        deadline = time.monotonic() + timeout
        for dispatcher in self.dispatchers:
            dispatcher.shutdown(max(0.0, deadline - time.monotonic()))
        for dispatcher in self.dispatchers:
            _tell_what_is_left(dispatcher)

    def describe(self) -> list[str]:
        lines = []
        for d in self.dispatchers:
            line = f"{d.name}: {d.exporter.describe()}"
            if d.fallback is not None:
                line += f" (fallback: {d.fallback.describe()})"
            lines.append(line)
        return lines

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        exporters: Iterable[ExporterSpec] | None = None,
        exporter_options: Mapping[str, Mapping[str, Any]] | None = None,
        fallback: ExporterSpec | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Pipeline:
        """Create the exporters and their dispatchers from *settings*."""
        options = exporter_options or {}
        specs = list(exporters) if exporters is not None else list(settings.exporter)
        shared = Serialized(fallback) if isinstance(fallback, Exporter) else None

        def make(spec: ExporterSpec, variable: str) -> tuple[str, Exporter]:
            if isinstance(spec, Exporter):
                return type(spec).__name__, spec
            return spec, plugins.create(spec, options.get(spec), environ, variable=variable)

        def fallback_for(name: str, exporter: Exporter) -> Exporter | None:
            """A fallback instance of its own for each primary (see `Exporter.bind_primary`)."""
            if shared is not None:
                return shared
            choice = fallback if isinstance(fallback, str) else settings.fallback_exporter
            if choice == "auto":
                choice = exporter.default_fallback or "none"
            if choice == "none":
                return None
            backup = Serialized(make(choice, "LOGPIPE_FALLBACK_EXPORTER")[1])
            backup.bind_primary(name, exporter)
            return backup

        def isolated(spec: ExporterSpec, exporter: Exporter) -> Exporter:
            """A primary in a child process per LOGPIPE_ISOLATION; instances given as such stay in
            process under ``auto`` (the caller holds them), and fallbacks always do (local disk)."""
            if isinstance(spec, Exporter) and settings.isolation == "auto":
                return exporter
            return isolate(exporter, settings.isolation)

        dispatchers: list[AnyDispatcher] = []
        for spec in specs:
            name, exporter = make(spec, "LOGPIPE_EXPORTER")
            exporter = isolated(spec, exporter)
            if settings.durable:  # the journal is the fallback too: no spool, no queue
                journal = open_journal(name, settings, environ)
                dispatchers.append(
                    JournalDispatcher(
                        exporter,
                        journal,
                        name=name,
                        max_wait=settings.durable_max_wait,
                        max_batch=settings.durable_max_batch,
                    )
                )
                continue
            backup = fallback_for(name, exporter)
            dispatchers.append(
                Dispatcher(
                    exporter,
                    name=name,
                    fallback=backup,
                    queue_size=settings.queue_size,
                    batch_size=settings.batch_size,
                    batch_delay=settings.batch_delay,
                    overflow=settings.overflow or ("spill" if backup is not None else "block"),
                    block_timeout=settings.block_timeout,
                )
            )
        return cls(dispatchers, settings)


def _tell_what_is_left(dispatcher: AnyDispatcher) -> None:
    """One stderr line when records were not delivered by shutdown: how many, where, and how they will go.

    A short job that ends during an outage leaves its records in the spool;
    without this line nothing would tell the user that they wait there.
    """
    stats = dispatcher.stats()
    lost = stats.queued + stats.in_flight
    if lost:
        _exit_report(
            f"{dispatcher.name}: {lost:,} record(s) still queued when the shutdown timeout "
            f"(LOGPIPE_SHUTDOWN_TIMEOUT) ran out were not delivered",
            force=True,
        )
    if stats.waiting and dispatcher.fallback is not None:
        hint = dispatcher.fallback.backlog_hint()
        _exit_report(f"{dispatcher.name}: {stats.waiting:,} record(s) wait {hint}".rstrip(), force=True)


#: The exit lines: forced (each is said once per shutdown), never through logging.
_exit_report = Reporter()


def chain_processors(
    settings: Settings, submit: Callable[[Record], object], *, func_name_ignores: list[str] | None = None
) -> list[Processor]:
    """The processor chain that hands each record to *submit* (a pipeline's queue, or a test's list)."""
    s = settings
    redact: list[Processor] = [Redactor(s.redact_keys, s.redact_pattern)] if s.redact else []
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        *redact,
        add_trace_context,
        FuncNameAdder(func_name_ignores),
        KafkaLogRenderer(
            submit,
            action=s.action,
            time_format=s.time_format,
            utc=s.utc,
            service=ServiceName(s.service),
            local=s.local_render,
        ),
    ]


# -- the current pipeline ----------------------------------------------------------

_live: weakref.WeakSet[Pipeline] = weakref.WeakSet()
_current: Pipeline | None = None
_lock = threading.Lock()


def configure(
    *,
    exporter: ExporterSpec | Iterable[ExporterSpec] | None = None,
    fallback_exporter: ExporterSpec | None = None,
    exporter_options: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> Pipeline:
    """Build a pipeline and make it current, replacing (and flushing) the old one.

    *exporter* is a name, a comma list, or a list of names and `Exporter`
    instances; *exporter_options* maps an exporter name to its settings (the
    same names as its ``LOGPIPE_<NAME>_*`` variables, lower case). Other
    keyword arguments are `Settings` fields. Arguments override the
    environment; bad values raise `ConfigError` here, never in a log call.
    """
    global _current
    specs: list[ExporterSpec] | None = None
    if isinstance(exporter, (str, Exporter)):
        exporter = [exporter]
    if exporter is not None:
        specs = []
        for spec in exporter:
            if isinstance(spec, str):
                specs.extend(s.strip() for s in spec.split(",") if s.strip())
            else:
                specs.append(spec)
        settings["exporter"] = tuple(s for s in specs if isinstance(s, str)) or ("custom",)
    if isinstance(fallback_exporter, str):
        settings["fallback_exporter"] = fallback_exporter
    parsed = config.load(Settings, config.CORE_PREFIX, settings, environ)
    fallback = fallback_exporter if isinstance(fallback_exporter, Exporter) else None
    pipeline = Pipeline.from_settings(parsed, specs, exporter_options, fallback, environ)
    with _lock:
        previous, _current = _current, pipeline
    if previous is not None:
        previous.shutdown()
    _install_exit_hooks(parsed)
    if parsed.capture_stdlib:
        from .stdlib import capture_root

        capture_root(parsed.capture_stdlib_level)
    _publish_metrics()
    return pipeline


def _publish_metrics() -> None:
    """Counters as OpenTelemetry metrics when the application has a MeterProvider (see `metrics.publish_stats`)."""
    from .metrics import publish_stats

    with contextlib.suppress(Exception):  # metrics must never stop an application from logging
        publish_stats()


def processors(**options: Any) -> list[Processor]:
    """The processor list for ``structlog.configure(processors=...)``.

    Takes the same arguments as `configure`; with none, everything comes from
    ``LOGPIPE_*`` variables and defaults (the ``file`` exporter).
    """
    return configure(**options).processors()


def current() -> Pipeline | None:
    return _current


def send(record: Record) -> None:
    """Queue a record built directly (`logpipe.info`, `logpipe.error`) on the current pipeline.

    The seed design's ``SendLog(data)``: for code that builds records itself
    instead of logging through structlog. Raises `RuntimeError` before
    `configure`, because a record with nowhere to go would be lost silently.
    """
    if _current is None:
        raise RuntimeError("logpipe is not configured: call logpipe.configure() or logpipe.processors() first")
    _current.submit(record)


def stats() -> dict[str, DispatchStats]:
    """Counters of the current pipeline, by exporter name."""
    return _current.stats() if _current is not None else {}


def flush(timeout: float | None = None) -> bool:
    """Hand everything logged so far to its destination; True when done within *timeout*.

    True means each record is either delivered (the exporter acknowledged
    it) or durably in the fallback spool, from which it is replayed later
    (``logpipe.stats()[name].waiting`` says how many wait there); False means
    some record is still queued or in flight after *timeout*. In durable mode
    every record is on disk once its log call returned; flush waits until the
    journal is delivered, or the exporter fails (True: the records wait in the
    journal).
    """
    return _current.force_flush(timeout) if _current is not None else True


def shutdown(timeout: float | None = None) -> None:
    """Flush and stop the current pipeline."""
    if _current is not None:
        _current.shutdown(timeout)


def _shutdown_all() -> None:
    for pipeline in list(_live):
        pipeline.shutdown()


_hooks_installed = False


def _install_exit_hooks(settings: Settings) -> None:
    """Flush at interpreter exit, and on SIGTERM when nobody else handles it."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_shutdown_all)
    _flush_in_workers()
    multiprocessing.util.register_after_fork(_AFTER_FORK, lambda _: _flush_in_workers())
    if (
        settings.handle_sigterm
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


class _Token:
    """Something `multiprocessing.util.register_after_fork` can hold a weak reference to."""


_AFTER_FORK = _Token()


def _flush_in_workers() -> None:
    """Flush in `multiprocessing` workers too, which end with ``os._exit`` and so never run ``atexit``.

    A ``Process`` (and so a ProcessPoolExecutor worker, a Celery prefork
    child) runs multiprocessing's own finalizers before that ``os._exit``:
    logpipe registers one there. A forked worker starts with that registry
    cleared, so the after-fork hook registers it again in each child.
    """
    multiprocessing.util.Finalize(None, _shutdown_all, exitpriority=100)


def _on_sigterm(signum: int, frame: object) -> None:
    """Flush, then die of SIGTERM as the process would have without us."""
    _shutdown_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
