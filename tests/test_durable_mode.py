"""Durable mode: a log call returns once its record is fsynced to the journal, which the exporter delivers from.

Unit tests of the group commit (`logpipe.spool.group`) and the journal
dispatcher (`logpipe.journal`), then SIGKILL of a logging application at
random moments: every record whose log call returned is delivered after a
restart, with its Id unchanged.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

import logpipe
from conftest import KAFKA_CLIENTS, Service, consume_all, wait_until
from logpipe.exporters.spool import SpoolExporter, SpoolOptions
from logpipe.journal import JournalDispatcher
from logpipe.record import Record, info
from logpipe.spool import Spool
from logpipe.spool.group import GroupCommit
from logpipe.testing import InMemoryExporter


def journal_for(tmp_path: Path, exporter: InMemoryExporter, **options: object) -> JournalDispatcher:
    spool = SpoolExporter(SpoolOptions(dir=tmp_path / "journal", replay_interval=0.05, **options))  # type: ignore[arg-type]
    return JournalDispatcher(exporter, spool, name="memory")


def journal_lines(directory: Path) -> list[bytes]:
    return [line for p in sorted(directory.glob("*.jsonl")) for line in p.read_bytes().splitlines()]


class TestGroupCommit:
    def test_callers_that_arrive_during_a_write_share_the_next_one(self) -> None:
        """While one batch is written, the other N-1 callers gather in one batch: 2 writes for N calls."""
        n = 16
        release = threading.Event()
        writes: list[list[bytes]] = []

        def write(payloads: list[bytes]) -> int:
            writes.append(list(payloads))
            if len(writes) == 1:
                assert release.wait(30)
            return len(payloads)

        group = GroupCommit(write)
        threads = [threading.Thread(target=group.append, args=(b"%d" % i,)) for i in range(n)]
        threads[0].start()
        wait_until(lambda: writes, timeout=10)
        for t in threads[1:]:
            t.start()
        wait_until(lambda: group.pending() == n - 1, timeout=10)
        release.set()
        for t in threads:
            t.join(30)
        assert [len(w) for w in writes] == [1, n - 1]
        assert (group.batches, group.records) == (2, n)

    def test_the_leader_waits_for_as_many_callers_as_the_last_batch_had(self) -> None:
        """After a batch of 3, the next leader holds the write (up to max_wait) until 3 callers have joined."""
        release = threading.Event()
        sizes: list[int] = []

        def write(payloads: list[bytes]) -> int:
            sizes.append(len(payloads))
            if len(sizes) == 1:
                assert release.wait(30)
            return len(payloads)

        group = GroupCommit(write, max_wait=30.0)
        first = threading.Thread(target=group.append, args=(b"first",))
        first.start()
        wait_until(lambda: sizes, timeout=10)
        batch = [threading.Thread(target=group.append, args=(b"x",)) for _ in range(3)]
        for t in batch:
            t.start()
        wait_until(lambda: group.pending() == 3, timeout=10)
        release.set()  # sizes so far: [1, 3]; the next three callers come one by one
        for t in [first, *batch]:
            t.join(30)
        late = [threading.Thread(target=group.append, args=(b"y",)) for _ in range(3)]
        for t in late:
            t.start()
            wait_until(lambda: group.pending() or sizes[-1] == 3, timeout=10)
        for t in late:
            t.join(30)
        assert sizes == [1, 3, 3]

    def test_a_lone_caller_never_waits(self) -> None:
        """One thread logging alone: each call is written at once, whatever max_wait says."""
        group = GroupCommit(len, max_wait=30.0)
        t0 = time.monotonic()
        for _ in range(5):
            assert group.append(b"x")
        assert time.monotonic() - t0 < 10
        assert group.batches == 5

    def test_a_failed_write_reaches_every_caller_of_the_batch(self) -> None:
        """Every caller whose record was in the failed batch hears the error, not only the leader."""

        def write(payloads: list[bytes]) -> int:
            raise OSError(28, "No space left on device")

        group = GroupCommit(write)
        with pytest.raises(OSError):
            group.append(b"x")
        assert group.batches == 1


class TestJournalDispatcher:
    def test_many_threads_share_fsyncs_and_each_call_returns_after_its_fsync(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """N threads log; fsyncs stay well below N calls, and each returned record lies within a synced length."""
        synced: dict[str, int] = {}
        real_fsync = os.fsync
        lock = threading.Lock()

        def recording_fsync(fd: int) -> None:
            real_fsync(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            with lock:
                synced[path] = max(synced.get(path, 0), os.fstat(fd).st_size)

        monkeypatch.setattr(os, "fsync", recording_fsync)
        memory = InMemoryExporter()
        memory.gate.clear()  # nothing is delivered: the journal must hold everything by itself
        dispatcher = journal_for(tmp_path, memory)
        directory = tmp_path / "journal" / "memory"
        problems: list[str] = []
        gate = threading.Barrier(8)

        def on_disk(record: Record) -> bool:
            for segment in directory.glob("*.jsonl"):
                with lock:
                    length = synced.get(str(segment), 0)
                if record.payload in segment.read_bytes()[:length]:
                    return True
            return False

        def worker() -> None:
            gate.wait(10)
            for i in range(100):
                record = info("durable", "worker", {"i": i})
                assert dispatcher.submit(record)
                if not on_disk(record):
                    problems.append(record.id)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        batches, records = dispatcher.group_commits()
        assert problems == []
        assert records == 800
        assert len(journal_lines(directory)) == 800
        memory.gate.set()
        assert dispatcher.force_flush(30)
        assert len(set(memory.ids())) == 800
        dispatcher.shutdown(10)
        print(f"800 calls from 8 threads: {batches} group commits")
        assert batches < records

    def test_records_stay_in_the_journal_while_the_exporter_fails(self, tmp_path: Path) -> None:
        """No fallback: refused records wait in the journal (counted as waiting) and go once it answers."""
        memory = InMemoryExporter(fail=True)
        dispatcher = journal_for(tmp_path, memory)
        records = [info("m", "f", {"i": i}) for i in range(50)]
        for record in records:
            assert dispatcher.submit(record)
        assert dispatcher.force_flush(10)  # blocked: True, the records are durably in the journal
        stats = dispatcher.stats()
        assert (stats.submitted, stats.sent, stats.waiting, stats.failed) == (50, 0, 50, 0)
        memory.fail = False
        wait_until(lambda: dispatcher.force_flush(10) and len(memory.records) >= 50, timeout=60)
        assert memory.ids() == [r.id for r in records]
        stats = dispatcher.stats()
        assert (stats.sent, stats.waiting) == (50, 0)
        dispatcher.shutdown(5)

    def test_a_full_journal_follows_the_spool_full_policy(self, tmp_path: Path) -> None:
        """drop_newest at max_bytes: the call returns False at once, the record is counted as dropped."""
        memory = InMemoryExporter(fail=True)
        dispatcher = journal_for(tmp_path, memory, max_bytes=2000, full="drop_newest")
        results = [dispatcher.submit(info("m", "f", {"i": i})) for i in range(40)]
        assert results[0] and not results[-1]
        stats = dispatcher.stats()
        assert stats.dropped == results.count(False) > 0
        assert stats.waiting == results.count(True)
        dispatcher.shutdown(1)

    def test_a_disk_error_is_counted_never_raised(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A write that fails makes the call return False and count one failed record."""
        dispatcher = journal_for(tmp_path, InMemoryExporter())

        def broken(self: Spool, payloads: object) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Spool, "append", broken)
        assert not dispatcher.submit(info("m", "f"))
        assert dispatcher.stats().failed == 1
        dispatcher.shutdown(1)


class TestDurablePipeline:
    def test_configure_durable_delivers_through_the_journal(self, tmp_path: Path) -> None:
        """configure(durable=True): every record in the file, the journal emptied, counters add up."""
        structlog.configure(processors=logpipe.processors(exporter="file", durable=True, local_render="none"))
        log = structlog.get_logger()
        for i in range(300):
            log.info("durable", i=i)
        assert logpipe.flush(30)
        stats = logpipe.stats()["file"]
        assert (stats.submitted, stats.sent, stats.waiting, stats.dropped, stats.failed) == (300, 300, 0, 0, 0)
        lines = Path("logs/logpipe.jsonl").read_bytes().splitlines()
        assert [orjson.loads(x)["Field"]["i"] for x in lines] == list(range(300))
        assert (tmp_path / "logs" / "journal" / "file").is_dir()

    def test_the_env_var_turns_it_on(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """LOGPIPE_DURABLE=true with LOGPIPE_DURABLE_DIR puts the journal there."""
        monkeypatch.setenv("LOGPIPE_DURABLE", "true")
        monkeypatch.setenv("LOGPIPE_DURABLE_DIR", "elsewhere")
        pipeline = logpipe.configure(exporter="file")
        (dispatcher,) = pipeline.dispatchers
        assert isinstance(dispatcher, JournalDispatcher)
        assert dispatcher.journal.directory == Path("elsewhere") / "file"

    def test_a_previous_journal_is_delivered_first_with_its_ids(self, tmp_path: Path) -> None:
        """What an earlier process left in the journal arrives before new records, Ids unchanged."""
        old = [info("old", "f", {"i": i}) for i in range(20)]
        spool = Spool(tmp_path / "logs" / "journal" / "InMemoryExporter")  # the name of an exporter given as such
        spool.append([r.payload for r in old])
        spool.close()
        memory = InMemoryExporter()
        logpipe.configure(exporter=memory, durable=True)
        new = info("new", "f")
        logpipe.send(new)
        assert logpipe.flush(30)
        assert memory.ids() == [r.id for r in old] + [new.id]


APP = """
import sys, structlog, logpipe
structlog.configure(processors=logpipe.processors(local_render="none", durable=True, handle_sigterm=False))
log = structlog.get_logger()
run = int(sys.argv[2])
for i in range(int(sys.argv[1])):
    log.info("durable", run=run, i=i)
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
"""

RESTART = """
import structlog, logpipe
logpipe.configure(durable=True)
assert logpipe.flush(60), "journal not delivered"
logpipe.shutdown()
"""


Key = tuple[int, int]  # (run, i): which application run logged the record, and its number in that run


def run_and_kill(env: dict[str, str], cwd: Path, rng: random.Random, run: int) -> set[Key]:
    """Start the app, SIGKILL it after a random number of returned calls; the key of every call that returned."""
    command = [sys.executable, "-c", textwrap.dedent(APP), "1000000", str(run)]
    app = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=cwd)
    assert app.stdout is not None
    returned: set[Key] = set()
    target = rng.randrange(1, 3000)
    deadline = time.monotonic() + 120
    while len(returned) < target and time.monotonic() < deadline:
        line = app.stdout.readline()
        if not line:
            break
        returned.add((run, int(line)))
    app.send_signal(signal.SIGKILL)
    rest, _ = app.communicate(timeout=30)  # what it printed before it died: those calls returned too
    returned.update((run, int(x)) for x in rest.split())
    assert app.returncode == -signal.SIGKILL
    assert len(returned) >= target, "the application stopped logging before it was killed"
    return returned


def key(doc: dict[str, Any]) -> Key:
    return doc["Field"]["run"], doc["Field"]["i"]


def journal_ids(directory: Path) -> dict[Key, str]:
    """(run, i) -> Id of every readable record in the journal (a torn last line is what SIGKILL mid-write leaves)."""
    result = {}
    for line in journal_lines(directory):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        result[key(doc)] = doc["Id"]
    return result


def restart(env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-c", RESTART], env=env, cwd=cwd, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_") or k.startswith("LOGPIPE_TEST_")}
    return {**env, "LOGPIPE_DURABLE_DIR": str(tmp_path / "journal")}


@pytest.mark.slow
def test_sigkill_loses_no_record_whose_call_returned_file(tmp_path: Path) -> None:
    """SIGKILL at random moments, three times; after a restart the file holds every returned record, same Id."""
    rng = random.Random(os.environ.get("LOGPIPE_TEST_SEED", str(time.time_ns())))
    out = tmp_path / "out.jsonl"
    env = {**base_env(tmp_path), "LOGPIPE_EXPORTER": "file", "LOGPIPE_FILE_PATH": str(out)}
    returned: set[Key] = set()
    ids: dict[Key, str] = {}
    for run in range(3):
        returned |= run_and_kill(env, tmp_path, rng, run)
        ids.update(journal_ids(tmp_path / "journal" / "file"))
        restart(env, tmp_path)
        delivered: dict[Key, set[str]] = {}
        for line in out.read_bytes().splitlines():
            doc = orjson.loads(line)
            delivered.setdefault(key(doc), set()).add(doc["Id"])
        missing = returned - set(delivered)
        assert not missing, f"{len(missing)} returned record(s) lost, e.g. {sorted(missing)[:5]}"
        assert all(delivered[i] == {ids[i]} for i in returned if i in ids), "an Id changed on the way"
    assert not journal_ids(tmp_path / "journal" / "file"), "the journal still holds delivered records"


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_sigkill_loses_no_record_whose_call_returned_kafka(tmp_path: Path, kafka_service: Service, client: str) -> None:
    """The same with the Kafka exporter on each client (the session's real broker): every returned record in the
    topic."""
    bootstrap = kafka_service.address
    rng = random.Random(os.environ.get("LOGPIPE_TEST_SEED", str(time.time_ns())))
    topic = f"durable-{uuid.uuid4().hex[:12]}"
    env = {
        **base_env(tmp_path),
        "LOGPIPE_EXPORTER": "kafka",
        "LOGPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LOGPIPE_KAFKA_TOPIC": topic,
        "LOGPIPE_KAFKA_CLIENT": client,
    }
    returned: set[Key] = set()
    ids: dict[Key, str] = {}
    for run in range(2):
        returned |= run_and_kill(env, tmp_path, rng, run)
        ids.update(journal_ids(tmp_path / "journal" / "kafka"))
        restart(env, tmp_path)
    delivered: dict[Key, set[str]] = {}
    for message in consume_all(bootstrap, topic):
        doc = orjson.loads(message.value)
        delivered.setdefault(key(doc), set()).add(doc["Id"])
    missing = returned - set(delivered)
    assert not missing, f"{len(missing)} returned record(s) lost, e.g. {sorted(missing)[:5]}"
    assert all(delivered[i] == {ids[i]} for i in returned if i in ids), "an Id changed on the way"


FORKED = """
import multiprocessing as mp, os, structlog, logpipe
structlog.configure(processors=logpipe.processors(exporter="file", local_render="none", durable=True))

def work(n):
    log = structlog.get_logger()
    for i in range(200):
        log.info("child", worker=n, i=i)

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=work, args=(n,)) for n in range(3)]
    for w in workers:
        w.start()
    structlog.get_logger().info("parent")
    for w in workers:
        w.join(60)
        assert w.exitcode == 0, w.exitcode
    assert logpipe.flush(60)
"""


def test_forked_workers_journal_their_records_and_the_lock_holder_delivers_them(tmp_path: Path) -> None:
    """Three fork workers log in durable mode; each has segments of its own, the parent delivers all 601 records."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    done = subprocess.run([sys.executable, "-c", FORKED], env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    docs = [orjson.loads(x) for x in (tmp_path / "logs" / "logpipe.jsonl").read_bytes().splitlines()]
    children = {(d["Field"]["worker"], d["Field"]["i"]) for d in docs if d["Msg"] == "child"}
    assert children == {(n, i) for n in range(3) for i in range(200)}
    assert sum(d["Msg"] == "parent" for d in docs) == 1
