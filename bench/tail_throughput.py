"""Workload 4: file -> Kafka, ``logpipe tail`` vs the raw producer on the same lines.

The same JSON Lines file of N KafkaLog records (about 300 bytes each, what
logpipe's file exporter writes) is sent to a 3-partition topic of the real
broker, one message per line, in interleaved rounds (order rotates):

* **raw kafka-python producer**: one ``KafkaProducer`` with exactly the
  settings logpipe's exporter derives (acks=all, idempotence, linger 5 ms,
  256 KiB batches) reads the file line by line and ``send``s each line as is,
  then ``flush``es: the client library's own limit for this job, with none of
  a shipper's duties (no headers, no registry, no rotation).
* **logpipe tail**: the `logpipe.tail.Tailer` API in ``--once`` mode (what
  ``logpipe tail --once`` runs) with a fresh registry, through a
  `KafkaExporter` with the same settings: it reads the file, recognises each
  line as a KafkaLog record (so it keeps its ``Id`` and gets the ``id``
  header), hands batches to the exporter with ``exporter.max_in_flight``
  batches in flight, and writes the registry after the acknowledgements.

Both are timed from the first line read to the last acknowledgement; the
producer is created and has fetched the topic's metadata before the clock
starts (one warm-up message each).

With confluent-kafka installed, the workload also publishes where the
tailer's time goes per line (`profile_tail`): the same ``--once`` run on
confluent-kafka, in process, with the CPU time of the tailer's thread
(``time.thread_time``) summed around each stage of the hot path (one timer
pair per block or batch, not per line): reading and splitting
(``Harvester.read``), taking lines into records (``Harvester.take``, whose
recognition, ``ingress.kafkalog``, is also timed alone over the same lines),
``produce`` (``ConfluentProducer.send``) and serving delivery reports
(``poll``, in ``await_progress``); the rest of the thread is the loop, the
in-flight bookkeeping and the registry; librdkafka's own threads are the
process's CPU time less the tailer thread's.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import (
    Context,
    Section,
    Skip,
    Target,
    create_topic,
    fmt_num,
    fmt_pct,
    median,
    require_kafka,
    spread,
    unique,
)
from .kafka_throughput import _delete_topic, kafka_options, make_records, producer_config

KEY = "tail_throughput"
TITLE = "4. File -> Kafka: logpipe tail vs the raw producer"


def tail_available() -> bool:
    try:
        from logpipe.cli import main
    except ImportError:
        return False
    import click

    return main.get_command(click.Context(main), "tail") is not None  # commands load lazily


def run_raw_file(path: Path, topic: str) -> tuple[float, int]:
    from kafka import KafkaProducer

    producer = KafkaProducer(**producer_config(topic, "all"))
    try:
        producer.send(topic, value=b"{}").get(30)
        sent = 0
        t0 = time.perf_counter()
        with path.open("rb") as lines:
            for line in lines:
                producer.send(topic, value=line.rstrip(b"\n"))
                sent += 1
        producer.flush(300)
        return sent / (time.perf_counter() - t0), sent
    finally:
        producer.close(10)


def run_raw_confluent_file(path: Path, topic: str) -> tuple[float, int]:
    """confluent-kafka's producer reading the file (acks=all, idempotent, logpipe's librdkafka settings)."""
    from confluent_kafka import Producer

    from logpipe.exporters.kafka_options import KafkaOptions, librdkafka_config

    producer = Producer(librdkafka_config(KafkaOptions(**kafka_options(topic, "all"))))
    producer.produce(topic, b"{}")
    producer.flush(30)
    produce, poll = producer.produce, producer.poll
    sent = 0
    t0 = time.perf_counter()
    with path.open("rb") as lines:
        for line in lines:
            while True:
                try:
                    produce(topic, line.rstrip(b"\n"))
                    break
                except BufferError:
                    poll(0.01)
            sent += 1
    producer.flush(300)
    return sent / (time.perf_counter() - t0), sent


def run_tail(path: Path, topic: str, isolation: str = "auto", client: str = "kafka-python") -> tuple[float, int]:
    """``logpipe tail --once`` on *path* with a fresh registry; (lines/s, records acknowledged).

    The tailer makes its exporter as the command does (``LOGPIPE_TAIL_ISOLATION=auto``:
    a child process on kafka-python, in process on confluent-kafka).
    """
    from logpipe.record import info
    from logpipe.tail import Tailer, load_options

    with tempfile.TemporaryDirectory(prefix="logpipe-bench-tail-registry-") as state:
        options = load_options(
            {
                "paths": (str(path),),
                "registry": Path(state) / "registry.json",
                "dead_letter": Path(state) / "dead-letter.jsonl",
                "isolation": isolation,
            },
            environ={},
        )
        overrides = {**kafka_options(topic, "all"), "client": client}
        tailer = Tailer(options, once=True, exporter_overrides=overrides)
        tailer.exporter.export([info("warm-up", "bench")])  # producer made, metadata fetched: untimed, like raw
        t0 = time.perf_counter()
        stats = tailer.run()
        seconds = time.perf_counter() - t0
    return stats.sent / seconds, stats.sent


#: The stages of `profile_tail`: key -> (row label, what it is).
STAGES = {
    "read": ("read + split", "`Harvester.read`: `pread` of a 1 MiB block, `bytes.split` into lines"),
    "recognise": (
        "recognise",
        "`ingress.kafkalog` per line: `orjson.loads`, the KafkaLog key checks, the `Record` (timed alone over the "
        "same lines)",
    ),
    "take": ("take (the rest)", "`Harvester.take` less the recognition: the loop, CR check, offsets, appends"),
    "send": ("send", "`ConfluentProducer.send`: one `produce` per record with its `id` header and callback"),
    "reports": ("delivery reports", "`poll` in `await_progress`: librdkafka's reports, one callback per record"),
    "other": ("other", "the rest of the tailer's thread: loop, batches, in-flight bookkeeping, outcome, registry"),
}


@contextmanager
def _timed(spent: dict[str, float], targets: list[tuple[Any, str, str]]) -> Iterator[None]:
    """Sum the calling thread's CPU time spent in each ``(class, method, key)`` of *targets* into *spent*."""
    clock = time.thread_time
    originals = [(cls, name, getattr(cls, name)) for cls, name, _ in targets]

    def wrap(method: Callable[..., Any], key: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return method(*args, **kwargs)
            finally:
                spent[key] += clock() - t0

        return timed

    for (cls, name, method), (_, _, key) in zip(originals, targets, strict=True):
        setattr(cls, name, wrap(method, key))
    try:
        yield
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def profile_tail(path: Path, topic: str) -> dict[str, float]:
    """CPU microseconds per line of each stage of ``logpipe tail --once`` on confluent-kafka (see `STAGES`)."""
    from logpipe import ingress
    from logpipe.exporters import kafka_confluent_producer as ck
    from logpipe.record import info
    from logpipe.tail import Tailer, load_options
    from logpipe.tail.harvester import Harvester

    spent = dict.fromkeys(("read", "take", "send", "reports"), 0.0)
    targets = [
        (Harvester, "read", "read"),
        (Harvester, "take", "take"),
        (ck.ConfluentProducer, "send", "send"),
        (ck._Flight, "await_progress", "reports"),
    ]
    collected = [0.0, 0.0]  # the collector's time (it runs inside whichever stage allocates)

    def gc_clock(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            collected[1] = time.thread_time()
        else:
            collected[0] += time.thread_time() - collected[1]

    with tempfile.TemporaryDirectory(prefix="logpipe-bench-tail-profile-") as state:
        options = load_options(
            {"paths": (str(path),), "registry": Path(state) / "r.json", "dead_letter": Path(state) / "dl.jsonl"},
            environ={},
        )
        tailer = Tailer(
            options, once=True, exporter_overrides={**kafka_options(topic, "all"), "client": "confluent-kafka"}
        )
        tailer.exporter.export([info("warm-up", "bench")])
        with _timed(spent, targets):
            gc.callbacks.append(gc_clock)
            try:
                cpu0, main0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
                stats = tailer.run()
                wall = time.perf_counter() - t0
                main, cpu = time.thread_time() - main0, time.process_time() - cpu0
            finally:
                gc.callbacks.remove(gc_clock)
    n = max(1, stats.sent)
    lines = path.read_bytes().split(b"\n")[:-1]
    kafkalog, received = ingress.kafkalog, time.time()
    c0 = time.thread_time()
    for line in lines:
        kafkalog(line, received)
    # Timed apart, so under load it can come out above the whole of take, which contains it: capped there,
    # so that the stages still add up to the thread.
    recognise = min((time.thread_time() - c0) / len(lines) * n, spent["take"])
    us = 1e6 / n
    out = {
        "read": spent["read"] * us,
        "recognise": recognise * us,
        "take": (spent["take"] - recognise) * us,
        "send": spent["send"] * us,
        "reports": spent["reports"] * us,
        "other": (main - sum(spent.values())) * us,
        "thread": main * us,
        "librdkafka": (cpu - main) * us,
        "cpu": cpu * us,
        "gc": collected[0] * us,
        "rate": stats.sent / wall,
        "sent": float(stats.sent),
    }
    return out


def profile_note(profiles: list[dict[str, float]], n: int) -> str:
    """The per-line table of `profile_tail` runs (medians) as markdown."""
    med = {k: median(p[k] for p in profiles) for k in profiles[0]}
    rows = [
        "| stage | what | CPU us per line |",
        "|---|---|---|",
        *(f"| {label} | {what} | {med[key]:.2f} |" for key, (label, what) in STAGES.items()),
        f"| **the tailer's thread** | the sum: what bounds lines/s (1 / this) | **{med['thread']:.2f}** |",
        f"| librdkafka's threads | batching, sending, acknowledgements (C, the other core) | {med['librdkafka']:.2f} |",
        f"| process | all threads | {med['cpu']:.2f} |",
    ]
    return (
        f"**Where the time goes, per line** (`profile_tail`: `logpipe tail --once` on confluent-kafka in process, "
        f"{n:,} KafkaLog lines, median of {len(profiles)} run(s); {fmt_num(med['rate'])} lines/s while timed). "
        f"Each stage is the tailer thread's CPU time around it (`time.thread_time`, one timer pair per block or "
        f"batch); the garbage collector ran {med['gc']:.2f} us a line of it, inside whichever stage allocated.\n\n"
        + "\n".join(rows)
    )


def run(ctx: Context) -> Section:
    started = time.perf_counter()
    section = Section(
        key=KEY,
        title=TITLE,
        columns=["peer", "events/s", "spread (events/s)", "ratio to raw producer", "delivered"],
        quick=ctx.quick,
    )
    require_kafka()
    if not tail_available():
        raise Skip("logpipe tail is not installed (logpipe.cli has no tail command)")
    n, rounds = (5_000, 2) if ctx.quick else (200_000, 3)
    topic = unique("bench-tail")
    create_topic(topic)
    peers: dict[str, tuple[str, Callable[[Path, str], tuple[float, int]]]] = {
        "raw": ("raw kafka-python producer reading the file (acks=all, logpipe's settings)", run_raw_file),
        "tail": (
            "logpipe tail --once on kafka-python (Tailer API, fresh registry, LOGPIPE_TAIL_ISOLATION=auto: "
            "the Kafka exporter in a child process)",
            run_tail,
        ),
        "tail_thread": (
            "logpipe tail --once on kafka-python, exporter in process (LOGPIPE_TAIL_ISOLATION=thread)",
            lambda path, topic: run_tail(path, topic, "thread"),
        ),
    }
    try:
        import confluent_kafka  # noqa: F401

        peers["raw_ck"] = (
            "raw confluent-kafka producer reading the file (acks=all, idempotent)",
            run_raw_confluent_file,
        )
        peers["tail_ck"] = (
            "logpipe tail --once on confluent-kafka (the default client when installed; "
            "LOGPIPE_TAIL_ISOLATION=auto: exporter in process)",
            lambda path, topic: run_tail(path, topic, "auto", "confluent-kafka"),
        )
    except ImportError:
        pass
    rates: dict[str, list[float]] = {k: [] for k in peers}
    delivered: dict[str, list[int]] = {k: [] for k in peers}
    order = list(peers)
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-tail-") as tmp:
        path = Path(tmp) / "app.jsonl"
        records = make_records(n)
        size = sum(len(r.payload) for r in records) / n
        with path.open("wb") as out:
            for r in records:
                out.write(r.payload + b"\n")
        del records
        for r in range(rounds):
            for key in order[r % len(order) :] + order[: r % len(order)]:
                rate, sent = peers[key][1](path, topic)
                rates[key].append(rate)
                delivered[key].append(sent)
                ctx.say(f"tail_throughput round {r + 1}/{rounds} {key}: {rate:,.0f} lines/s ({sent:,}/{n:,} lines)")
        profiles: list[dict[str, float]] = []
        if "tail_ck" in peers:
            for r in range(rounds):
                profiles.append(profile_tail(path, topic))
                ctx.say(f"tail_throughput profile {r + 1}/{rounds}: {profiles[-1]['thread']:.2f} us a line (thread)")
    _delete_topic(topic)
    per_round = {k: [a / b for a, b in zip(rates[k], rates["raw"], strict=True)] for k in peers}
    ratios = per_round["tail"]
    ratio = median(ratios)
    for key, (label, _) in peers.items():
        section.rows.append(
            {
                "peer": label,
                "key": key,
                "events/s": fmt_num(median(rates[key])),
                "spread (events/s)": spread(rates[key]),
                "ratio to raw producer": "100%" if key == "raw" else fmt_pct(median(per_round[key])),
                "delivered": f"{min(delivered[key]):,}/{n:,}",
            }
        )
    section.targets.append(
        Target(
            "logpipe tail >= 90% of the raw producer",
            f"{fmt_pct(ratio)} (rounds {fmt_pct(min(ratios))}-{fmt_pct(max(ratios))})",
            ratio >= 0.9 and min(delivered["tail"]) >= n,
        )
    )
    if "tail_ck" in peers:
        ck = [a / b for a, b in zip(rates["tail_ck"], rates["raw_ck"], strict=True)]
        section.targets.append(
            Target(
                "logpipe tail on confluent-kafka >= 80% of the raw confluent-kafka producer reading the file",
                f"{fmt_pct(median(ck))} ({fmt_num(median(rates['tail_ck']))} vs {fmt_num(median(rates['raw_ck']))} "
                f"lines/s)",
                median(ck) >= 0.8 and min(delivered["tail_ck"]) >= n,
            )
        )
    section.notes.append(
        f"{n:,} KafkaLog lines of {size:.0f} bytes in one file, {rounds} rounds per peer in rotating order, "
        f"3-partition topic on the local broker; events/s is the median over rounds, the ratio the median of "
        f"per-round ratios (tail round / raw round of the same run)."
    )
    section.notes.append(
        "Both peers are timed from the first line read to the last acknowledgement. logpipe tail does more per "
        "line than the raw producer: it parses each line to tell a KafkaLog record from text to be wrapped, "
        "sends the record's `id` header, waits for each batch's acknowledgements before the registry may "
        "advance (with `max_in_flight` batches outstanding, so the producer keeps sending), and writes the "
        "registry atomically at the end."
    )
    thread = median(per_round["tail_thread"])
    section.notes.append(
        f"**Reading the rows.** With the Kafka exporter in the tailer's own process the tail reaches "
        f"{fmt_pct(thread)} of the raw producer: all of it is Python under one GIL with kafka-python's sender "
        f"thread, and logpipe's per-line work (recognising the line: `orjson.loads` of a 300-byte record plus the "
        f"key checks and the `Record`, ~2.3 us a line when profiled) comes on top of kafka-python's `send`, which "
        f"is ~85% of that thread's time. Tried there: a shorter GIL switch interval (slower), GC tuning (both "
        f"peers gain alike), pysimdjson for the check (~0.4 us a line). On kafka-python, "
        f"`LOGPIPE_TAIL_ISOLATION=auto` runs the exporter in a child process, so reading and recognising lines and "
        f"kafka-python's work use the two cores: {fmt_pct(ratio)}. On confluent-kafka (`LOGPIPE_KAFKA_CLIENT=auto` "
        f"picks it when installed, so it is what `logpipe tail` runs by default) `auto` keeps the exporter in the "
        f"tailer's process: librdkafka's threads are C threads, and the per-line cost is the tailer's Python "
        f"(see the per-line table below). Not validating the JSON would save the parse but would send torn lines "
        f"byte for byte instead of wrapping them."
    )
    if profiles:
        section.notes.append(profile_note(profiles, n))
    section.extra = {
        "profiles": profiles,
        "rates": rates,
        "ratios": ratios,
        "per_round": per_round,
        "delivered": delivered,
        "n": n,
        "rounds": rounds,
    }
    section.seconds = time.perf_counter() - started
    return section
