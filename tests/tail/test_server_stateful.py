"""The tailer as an interpreter of file-system actions, checked against a model of what must come out.

Vector's file-source tests are the model: hypothesis drives a sequence of
actions (append lines: short, empty, longer than max_line_bytes, a partial last
line; rotate by rename; truncate; remove a rotated file; make the next export
fail, stop a tailer while Kafka is down) and, now and then, a drain: a new `Tailer` in ``--once`` mode reading the
registry the previous one left (a restart). The model is the bytes written to
each file. After every drain:

* every complete non-empty line of every file was delivered at least once
  (a line longer than max_line_bytes as its pieces);
* nothing was invented: each record is the bytes of its file at its offset,
  ending at a newline, at a piece boundary, or at the end of a rotated file;
* per file, records of first-time exports arrive in file order (a batch sent
  again after a failure may come later, as docs/tail.md says).

Lines carry a unique number, so a file rewritten after a truncation never
begins with the bytes it had before (what the registry's head CRC relies on).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from conftest import wait_until
from logpipe.exporters.base import Done, Exporter, ExportResult, Pending
from logpipe.record import Record
from logpipe.tail import Tailer, load_options

MAX_LINE = 16


class Capture(Exporter):
    """Records what it is given with `begin`, a batch at a time; can fail the next few exports."""

    max_in_flight = 3

    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[tuple[dict[str, object], bool]] = []
        self.fail_next = 0
        self._failed_ids: set[str] = set()
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Record]) -> ExportResult:
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                self._failed_ids.update(r.id for r in batch)
                return ExportResult.FAILURE
            for r in batch:
                self.delivered.append((orjson.loads(r.payload), r.id in self._failed_ids))
        return ExportResult.SUCCESS

    def begin(self, batch: Sequence[Record]) -> Pending[ExportResult]:
        return Done(self.export(batch))


lines_strategy = st.lists(
    st.one_of(
        st.just(0),  # an empty line
        st.integers(1, 8),  # short
        st.integers(MAX_LINE + 1, 3 * MAX_LINE + 3),  # split into pieces
    ),
    min_size=1,
    max_size=5,
)


class TailMachine(RuleBasedStateMachine):
    #: LOGPIPE_TAIL_MULTILINE: the numbered lines never continue an event, but with a rule each goes
    #: through the Assembler, held until the next line or the end (the registry at its first line).
    multiline = "none"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="logpipe-tail-model-"))
        self.exporter = Capture()
        #: File name -> its content as written (the model); "app.log" is the live one.
        self.content: dict[str, bytes] = {}
        #: File name -> offsets of its content delivered so far (moves with the file, reset by a truncation).
        self.done: dict[str, set[int]] = {}
        self.rotated = 0
        self.counter = 0
        self.options = load_options(
            {
                "paths": (str(self.dir / "app.log*"),),
                "registry": self.dir / "state" / "registry.json",
                "dead_letter": self.dir / "state" / "dead.jsonl",
                "batch_size": 3,
                "batch_bytes": 64,
                "max_line_bytes": MAX_LINE,
                "scan_interval": 0.01,
                "poll_interval": 0.001,
                "backoff": 0.01,
                "max_backoff": 0.02,
                "shutdown_timeout": 0.0,
                "registry_flush": 0.0,
                "multiline": self.multiline,
            },
            environ={},
        )

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- actions ------------------------------------------------------------------------

    @rule(sizes=lines_strategy, partial=st.booleans())
    def append(self, sizes: list[int], partial: bool) -> None:
        """Append lines (each non-empty one numbered); with *partial* the last has no newline yet."""
        parts = []
        for size in sizes:
            if size:
                self.counter += 1
                tag = b"%d:" % self.counter
                parts.append((tag + b"abcdefghij" * 6)[: max(size, len(tag))])
            else:
                parts.append(b"")
        data = b"\n".join(parts) + (b"" if partial else b"\n")
        with (self.dir / "app.log").open("ab") as out:
            out.write(data)
        self.content["app.log"] = self.content.get("app.log", b"") + data

    @precondition(lambda self: "app.log" in self.content)
    @rule()
    def rotate(self) -> None:
        """Rename the live file away (its name still matches the pattern); the next append makes a new one."""
        name = f"app.log.{self.rotated}"
        self.rotated += 1
        (self.dir / "app.log").rename(self.dir / name)
        self.content[name] = self.content.pop("app.log")
        self.done[name] = self.done.pop("app.log", set())

    @precondition(lambda self: "app.log" in self.content)
    @rule()
    def truncate(self) -> None:
        """Drain, then empty the live file (lines written between a drain and a truncation are lost by it)."""
        self.drain()
        (self.dir / "app.log").write_bytes(b"")
        self.content["app.log"] = b""
        self.done["app.log"] = set()

    @precondition(lambda self: any(name != "app.log" for name in self.content))
    @rule(data=st.data())
    def remove_rotated(self, data: st.DataObject) -> None:
        """Drain, then delete a rotated file (its inode may be reused by the next new file)."""
        self.drain()
        name = data.draw(st.sampled_from(sorted(n for n in self.content if n != "app.log")))
        (self.dir / name).unlink()
        del self.content[name]
        self.done.pop(name, None)

    @rule(count=st.integers(1, 3))
    def fail_next_exports(self, count: int) -> None:
        self.exporter.fail_next = count

    @rule()
    def stop_while_failing(self) -> None:
        """A tailer stopped while every export fails (Kafka down): what it read must be read again next time."""
        self.exporter.fail_next = 1 << 30
        tailer = Tailer(self.options, self.exporter, once=True)
        thread = threading.Thread(target=tailer.run)
        thread.start()
        try:
            wait_until(lambda: tailer.stats.retries or tailer.stats.state == "stopped", timeout=10)
        finally:
            tailer.stop()
            thread.join(10)
            self.exporter.fail_next = 0
        assert not thread.is_alive()

    @rule()
    def drain(self) -> None:
        """A new tailer (a restart: it reads the registry) reads everything there is and stops; then check."""
        start = len(self.exporter.delivered)
        Tailer(self.options, self.exporter, once=True).run()
        self.check(self.exporter.delivered[start:])

    # -- the model ------------------------------------------------------------------------

    def check(self, delivered: list[tuple[dict[str, object], bool]]) -> None:
        seen: dict[str, set[int]] = {name: set() for name in self.content}
        last: dict[str, int] = {}
        for doc, retried in delivered:
            log = doc["Field"]["log"]  # type: ignore[index]
            name = Path(log["file"]["path"]).name
            offset, msg, split = log["offset"], str(doc["Msg"]), "flags" in log
            content = self.content[name]
            piece = msg.encode()
            assert content[offset : offset + len(piece)] == piece, f"invented: {msg!r} at {name}:{offset}"
            end = offset + len(piece)
            if split:
                assert len(piece) == MAX_LINE or content[end : end + 1] == b"\n", f"bad piece {msg!r}"
            else:
                rotated_end = name != "app.log" and end == len(content)
                assert content[end : end + 1] == b"\n" or rotated_end, f"not a whole line: {msg!r}"
            if not retried:
                assert offset > last.get(name, -1), f"out of order in {name}: {offset} after {last[name]}"
                last[name] = offset
            seen[name].add(offset)
        for name, content in self.content.items():
            done = self.done.setdefault(name, set())
            done |= seen[name]
            assert not (missing := self._expected(content) - done), f"{name}: never delivered at {sorted(missing)}"

    @staticmethod
    def _expected(content: bytes) -> set[int]:
        """Offsets of every record the complete lines of *content* must give (pieces of long lines included)."""
        offsets: set[int] = set()
        pos = 0
        for line in content.split(b"\n")[:-1]:
            offsets.update(range(pos, pos + len(line), MAX_LINE))
            pos += len(line) + 1
        return offsets


TailMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestTailMachine = TailMachine.TestCase


class MultilineTailMachine(TailMachine):
    multiline = "python"


MultilineTailMachine.TestCase.settings = TailMachine.TestCase.settings
TestMultilineTailMachine = MultilineTailMachine.TestCase
