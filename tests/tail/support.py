"""What the tail tests share: a Kafka-like fake exporter, options for a temp directory, tailers in threads."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logpipe.exporters.base import Exporter, ExportResult, PartialFailure, Pending
from logpipe.record import Record, info
from logpipe.tail import Registry, Tailer, TailOptions, TailStats, load_options


class FakeKafka(Exporter):
    """Keeps batches in flight like the Kafka exporter (delivery happens at ``wait``); can fail, refuse or raise."""

    max_in_flight = 3

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Record] = []
        self.fail = False
        #: ``begin`` raises (an exporter bug): the tailer must count it a FAILURE and go on.
        self.explode = False
        #: Records whose payload contains one of these are refused (PartialFailure), as too large ones are.
        self.refuse: set[bytes] = set()
        self.outstanding = 0
        self.most_outstanding = 0
        self.calls = 0
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        with self._lock:
            self.calls += 1
            if self.fail:
                return ExportResult.FAILURE
            refused = [r for r in batch if any(s in r.payload for s in self.refuse)]
            self.records.extend(r for r in batch if r not in refused)
        return PartialFailure(refused) if refused else ExportResult.SUCCESS

    def begin(self, batch: Sequence[Record]) -> Pending[ExportResult | PartialFailure]:
        if self.explode:
            raise RuntimeError("exporter bug")
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        return _Later(self, list(batch))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [r.payload for r in self.records]


class _Later:
    def __init__(self, exporter: FakeKafka, batch: list[Record]) -> None:
        self.exporter, self.batch = exporter, batch

    def wait(self) -> ExportResult | PartialFailure:
        self.exporter.outstanding -= 1
        return self.exporter.export(self.batch)


def options(tmp_path: Path, *patterns: str, **overrides: Any) -> TailOptions:
    """Fast-moving settings for files under *tmp_path* (state in tmp_path/state)."""
    settings: dict[str, Any] = {
        "paths": tuple(str(tmp_path / p) for p in patterns) or (str(tmp_path / "*.log*"),),
        "registry": tmp_path / "state" / "registry.json",
        "dead_letter": tmp_path / "state" / "dead.jsonl",
        "scan_interval": 0.05,
        "poll_interval": 0.01,
        "close_rotated": 0.2,
        "backoff": 0.05,
        "max_backoff": 0.2,
        "registry_flush": 0.0,
    }
    settings.update(overrides)
    return load_options(settings, environ={})


def once(opts: TailOptions, exporter: Exporter) -> TailStats:
    return Tailer(opts, exporter, once=True).run()


class Running:
    """A follow-mode Tailer in a thread."""

    def __init__(self, opts: TailOptions, exporter: Exporter) -> None:
        self.tailer = Tailer(opts, exporter)
        self.result: TailStats | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.tailer.run()

    def stop(self) -> TailStats:
        self.tailer.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.result is not None
        return self.result


def kafkalog_lines(n: int, start: int = 0) -> list[bytes]:
    return [info(f"event {i}", "app.handler", {"i": i}).payload for i in range(start, start + n)]


def write(path: Path, lines: Sequence[bytes], mode: str = "ab") -> None:
    with path.open(mode) as out:
        out.write(b"".join(line + b"\n" for line in lines))


def registry_offsets(opts: TailOptions) -> dict[str, int]:
    return {e.path: e.offset for e in Registry(opts.registry).load().entries.values()}
