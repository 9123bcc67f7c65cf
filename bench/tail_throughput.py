"""Workload 4: file -> Kafka, ``logpipe tail`` vs the raw producer on the same lines.

``logpipe tail`` does not exist yet (no open issue asks for it), so its row
says so; the raw baseline it would be judged against is measured anyway:
a kafka-python producer with logpipe's exporter settings reading a JSON Lines
file of N KafkaLog records line by line and sending each line as is.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import Context, Section, Target, create_topic, fmt_num, median, require_kafka, spread, unique
from .kafka_throughput import _delete_topic, make_records, producer_config

KEY = "tail_throughput"
TITLE = "4. File -> Kafka: logpipe tail vs the raw producer"


def tail_available() -> bool:
    try:
        from logpipe.cli import main
    except ImportError:
        return False
    commands = getattr(main, "commands", {})
    return "tail" in commands


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


def run(ctx: Context) -> Section:
    started = time.perf_counter()
    section = Section(
        key=KEY,
        title=TITLE,
        columns=["peer", "events/s", "spread (events/s)", "ratio to raw producer"],
        quick=ctx.quick,
    )
    require_kafka()
    n, rounds = (5_000, 1) if ctx.quick else (200_000, 3)
    topic = unique("bench-tail")
    create_topic(topic)
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-tail-") as tmp:
        path = Path(tmp) / "app.jsonl"
        with path.open("wb") as out:
            for r in make_records(n):
                out.write(r.payload + b"\n")
        for r in range(rounds):
            rate, sent = run_raw_file(path, topic)
            rates.append(rate)
            ctx.say(f"tail_throughput round {r + 1}/{rounds} raw: {rate:,.0f} lines/s ({sent:,} lines)")
    _delete_topic(topic)
    implemented = tail_available()
    section.rows.append(
        {
            "peer": "logpipe tail",
            "events/s": "not yet implemented" if not implemented else "(not wired into the benchmark yet)",
            "spread (events/s)": "-",
            "ratio to raw producer": "-",
        }
    )
    section.rows.append(
        {
            "peer": "raw kafka-python producer reading the file (acks=all, logpipe's settings)",
            "events/s": fmt_num(median(rates)),
            "spread (events/s)": spread(rates),
            "ratio to raw producer": "100%",
        }
    )
    section.targets.append(Target("logpipe tail >= 90% of the raw producer", "not yet implemented", None))
    section.notes.append(
        f"`logpipe tail` is not implemented and no open issue asks for it; the row stays as a placeholder. The raw "
        f"baseline reads {n:,} KafkaLog lines from a file and sends each ({rounds} round(s), median)."
    )
    section.extra = {"rates": rates, "n": n, "implemented": implemented}
    section.seconds = time.perf_counter() - started
    return section
