"""Workload 2: throughput to the real Kafka broker.

N records of about 300 bytes (KafkaLog JSON made by logpipe itself) go to a
3-partition topic, timed from the first send to the last acknowledgement.
Peers, in interleaved rounds (order rotates):

* **raw kafka-python**: one ``KafkaProducer`` with exactly the settings
  logpipe's exporter derives (``logpipe.exporters.kafka_options.producer_config``:
  acks, idempotence, linger 5 ms, 256 KiB batches), ``send`` of the same
  pre-serialised bytes with the same ``id`` header, then ``flush``: the
  client library's own limit.
* **logpipe exporter**: the same pre-encoded `Record` objects handed to a
  pipeline (``exporter="kafka"``, queue, worker thread, `KafkaExporter`),
  then ``flush``. The dispatcher applies back-pressure (``overflow=block``
  with a long timeout) so nothing is dropped or spooled; every record must
  be counted ``sent``.
* **logpipe log calls**: the same through the whole structlog chain, one
  ``log.info`` per record (rendering included, so it cannot match a
  producer that is handed ready bytes; shown for the end-to-end picture).
* **confluent-kafka** (librdkafka) with the equivalent settings, as an upper
  bound, when it is installed.

Done for ``acks=all`` and ``acks=1``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .common import (
    KAFKA_BOOTSTRAP,
    Context,
    Section,
    Skip,
    Target,
    create_topic,
    exporter_available,
    fmt_num,
    fmt_pct,
    median,
    require_kafka,
    spread,
    unique,
)

KEY = "kafka_throughput"
TITLE = "2. Throughput to the real Kafka broker"


def make_records(n: int, size: int = 300) -> list[Any]:
    from logpipe.record import make_record

    base = make_record(type="info", msg="order placed", func_name="shop.orders.place", fields={}).payload
    pad = "x" * max(0, size - len(base) - 75)
    return [
        make_record(
            type="info",
            msg="order placed",
            func_name="shop.orders.place",
            fields={"order_id": i, "user": "alice", "amount": 42.5, "note": pad},
            service="bench",
        )
        for i in range(n)
    ]


def kafka_options(topic: str, acks: str) -> dict[str, Any]:
    return {"bootstrap_servers": KAFKA_BOOTSTRAP, "topic": topic, "acks": acks}


def producer_config(topic: str, acks: str) -> dict[str, Any]:
    """The kafka-python settings logpipe's exporter would use."""
    from logpipe.exporters.kafka_options import KafkaOptions
    from logpipe.exporters.kafka_options import producer_config as exporter_config

    return exporter_config(KafkaOptions(**kafka_options(topic, acks)))


@dataclass
class Outcome:
    seconds: float
    delivered: int
    errors: int

    def rate(self, n: int) -> float:
        return n / self.seconds if self.seconds > 0 else float("nan")


# -- the peers -----------------------------------------------------------------------------


def run_raw(records: list[Any], topic: str, acks: str) -> Outcome:
    from kafka import KafkaProducer

    producer = KafkaProducer(**producer_config(topic, acks))
    errors = [0]

    def on_error(_: BaseException) -> None:
        errors[0] += 1

    try:
        producer.send(topic, value=records[0].payload).get(30)  # connect and fetch metadata, untimed
        send = producer.send
        t0 = time.perf_counter()
        for r in records:
            send(topic, value=r.payload, headers=[("id", r.id.encode())]).add_errback(on_error)
        producer.flush(120)
        seconds = time.perf_counter() - t0
    finally:
        producer.close(10)
    return Outcome(seconds, len(records) - errors[0], errors[0])


class pure_python_crc:
    """Make kafka-python checksum record batches with its pure-Python CRC32C, as without the crc32c package."""

    def __enter__(self) -> None:
        import kafka.record.default_records as records
        import kafka.record.util as util

        self._saved = records.calc_crc32c
        records.calc_crc32c = lambda view: util.crc32c_py(view)  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        import kafka.record.default_records as records

        records.calc_crc32c = self._saved  # type: ignore[assignment]


def crc_implementation() -> str:
    import kafka.record.util as util

    return "C extension (crc32c package)" if util.crc32c_c is not None else "pure Python (crc32c package missing)"


def run_raw_pure_crc(records: list[Any], topic: str, acks: str) -> Outcome:
    with pure_python_crc():
        return run_raw(records, topic, acks)


def run_confluent(records: list[Any], topic: str, acks: str) -> Outcome:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": KAFKA_BOOTSTRAP,
            "acks": "all" if acks == "all" else acks,
            "enable.idempotence": acks == "all",
            "linger.ms": 5,
            "batch.size": 262144,
            "compression.type": "none",
            "client.id": "logpipe-bench",
        }
    )
    state = {"ok": 0, "err": 0}

    def delivered(err: Any, msg: Any) -> None:
        state["err" if err is not None else "ok"] += 1

    producer.produce(topic, records[0].payload)
    producer.flush(30)
    state["ok"] = 0
    produce, poll = producer.produce, producer.poll
    t0 = time.perf_counter()
    for r in records:
        while True:
            try:
                produce(topic, r.payload, headers=[("id", r.id.encode())], on_delivery=delivered)
                break
            except BufferError:
                poll(0.01)
        poll(0)
    producer.flush(120)
    seconds = time.perf_counter() - t0
    return Outcome(seconds, state["ok"], state["err"])


def _pipeline(topic: str, acks: str, *, client: str = "kafka-python", **settings: Any) -> Any:
    import logpipe

    return logpipe.configure(
        exporter="kafka",
        exporter_options={"kafka": {**kafka_options(topic, acks), "client": client}},
        fallback_exporter="none",
        overflow="block",
        block_timeout=120.0,
        service="bench",
        **settings,
    )


def _check(pipeline: Any, n: int) -> Outcome:
    stats = list(pipeline.stats().values())[0]
    return Outcome(0.0, stats.sent, stats.submitted - stats.sent)


def run_logpipe_records(records: list[Any], topic: str, acks: str, **settings: Any) -> Outcome:
    pipeline = _pipeline(topic, acks, **settings)
    try:
        pipeline.submit(records[0])
        pipeline.force_flush(30)  # producer made, metadata fetched: untimed, like the raw peer
        submit = pipeline.dispatchers[0].submit
        t0 = time.perf_counter()
        for r in records:
            submit(r)
        pipeline.force_flush(300)
        seconds = time.perf_counter() - t0
        out = _check(pipeline, len(records))
        out.seconds = seconds
        out.delivered -= 1
    finally:
        pipeline.shutdown(10)
    return out


def run_logpipe_calls(records: list[Any], topic: str, acks: str, **settings: Any) -> Outcome:
    import structlog

    pipeline = _pipeline(topic, acks, **settings)
    sink = open(os.devnull, "wb")  # noqa: SIM115
    log = structlog.wrap_logger(
        structlog.BytesLogger(sink),
        processors=pipeline.processors(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    pad = records[0].decoded()["Field"].get("note", "")
    try:
        log.info("order placed", order_id=-1, user="alice", amount=42.5, note=pad)
        pipeline.force_flush(30)
        n = len(records)
        t0 = time.perf_counter()
        for i in range(n):
            log.info("order placed", order_id=i, user="alice", amount=42.5, note=pad)
        pipeline.force_flush(300)
        seconds = time.perf_counter() - t0
        out = _check(pipeline, n)
        out.seconds = seconds
        out.delivered -= 1
    finally:
        pipeline.shutdown(10)
        sink.close()
    return out


# -- the workload -------------------------------------------------------------------------------


def run(ctx: Context) -> Section:
    require_kafka()
    if not exporter_available("kafka"):
        raise Skip("logpipe's kafka exporter is not registered (logpipe.exporters entry point 'kafka')")
    started = time.perf_counter()
    n, rounds = (5_000, 2) if ctx.quick else (200_000, 3)
    ctx.say(f"kafka_throughput: making {n:,} records")
    records = make_records(n)
    size = sum(len(r.payload) for r in records) / n
    peers: dict[str, tuple[str, Callable[..., Outcome]]] = {
        "raw": ("raw kafka-python producer (same settings, same bytes)", run_raw),
        "logpipe": (
            "logpipe exporter on kafka-python (pre-encoded records -> queue -> KafkaExporter in a child process)",
            run_logpipe_records,
        ),
        "logpipe_thread": (
            "logpipe exporter on kafka-python in process (LOGPIPE_ISOLATION=thread)",
            lambda recs, topic, acks: run_logpipe_records(recs, topic, acks, isolation="thread"),
        ),
        "calls": (
            "logpipe log calls on kafka-python (structlog chain -> queue -> KafkaExporter in a child process)",
            run_logpipe_calls,
        ),
        "calls_thread": (
            "logpipe log calls on kafka-python, exporter in process (LOGPIPE_ISOLATION=thread)",
            lambda recs, topic, acks: run_logpipe_calls(recs, topic, acks, isolation="thread"),
        ),
    }
    crc = crc_implementation()
    if "C extension" in crc:
        peers["rawpure"] = ("raw kafka-python, pure-Python CRC32C (as without the crc32c package)", run_raw_pure_crc)
    try:
        import confluent_kafka  # noqa: F401

        peers["confluent"] = ("confluent-kafka (librdkafka), upper bound", run_confluent)
        peers["logpipe_ck"] = (
            "logpipe exporter on confluent-kafka (pre-encoded records -> queue -> KafkaExporter in process)",
            lambda recs, topic, acks: run_logpipe_records(recs, topic, acks, client="confluent-kafka"),
        )
        peers["calls_ck"] = (
            "logpipe log calls on confluent-kafka (structlog chain -> queue -> KafkaExporter in process)",
            lambda recs, topic, acks: run_logpipe_calls(recs, topic, acks, client="confluent-kafka"),
        )
        confluent_note = ""
    except ImportError:
        confluent_note = "confluent-kafka is not installed here: no upper-bound row."
    section = Section(
        key=KEY,
        title=TITLE,
        columns=["acks", "peer", "events/s", "spread (events/s)", "ratio to raw kafka-python", "MB/s", "delivered"],
        quick=ctx.quick,
    )
    figures: dict[str, dict[str, Any]] = {}
    for acks in ("all", "1"):
        topic = unique(f"bench-throughput-acks{acks}")
        create_topic(topic)
        rates: dict[str, list[float]] = {k: [] for k in peers}
        delivered: dict[str, list[int]] = {k: [] for k in peers}
        order = [k for k in peers if acks == "all" or k not in ("rawpure", "calls_thread", "calls_ck")]
        for r in range(rounds):
            rot = order[r % len(order) :] + order[: r % len(order)]
            for key in rot:
                out = peers[key][1](records, topic, acks)
                rates[key].append(out.rate(n))
                delivered[key].append(out.delivered)
                ctx.say(
                    f"kafka_throughput acks={acks} round {r + 1}/{rounds} {key}: {out.rate(n):,.0f} ev/s "
                    f"({out.delivered:,}/{n:,} delivered, {out.errors} errors)"
                )
        raw_rates = rates["raw"]
        for key, (label, _) in peers.items():
            if not rates[key]:
                continue
            rate = median(rates[key])
            ratios = [a / b for a, b in zip(rates[key], raw_rates, strict=True)]
            ratio = median(ratios)
            figures[f"{acks}/{key}"] = {
                "rate": rate,
                "ratio": ratio,
                "ratios": ratios,
                "rates": rates[key],
                "delivered": delivered[key],
            }
            section.rows.append(
                {
                    "acks": acks,
                    "peer": label,
                    "key": key,
                    "events/s": fmt_num(rate),
                    "spread (events/s)": spread(rates[key]),
                    "ratio to raw kafka-python": fmt_pct(ratio) if key != "raw" else "100%",
                    "MB/s": f"{rate * size / 1e6:.1f}",
                    "delivered": f"{min(delivered[key]):,}/{n:,}",
                }
            )
        _delete_topic(topic)
    for acks in ("all", "1"):
        fig = figures[f"{acks}/logpipe"]
        section.targets.append(
            Target(
                f"Kafka throughput >= 90% of raw kafka-python, acks={acks} (logpipe exporter, same records)",
                f"{fmt_pct(fig['ratio'])} (rounds {fmt_pct(min(fig['ratios']))}-{fmt_pct(max(fig['ratios']))})",
                fig["ratio"] >= 0.9 and min(fig["delivered"]) >= n,
            )
        )
    conf = figures.get("all/confluent")
    for key, who in (("calls_ck", "confluent-kafka"), ("calls", "kafka-python")):
        fig = figures.get(f"all/{key}")
        if conf and fig:
            ratio = fig["rate"] / conf["rate"]
            section.targets.append(
                Target(
                    f"logger -> Kafka events/s, acks=all, >= 80% of confluent-kafka's raw producer ({who})",
                    f"{fmt_num(fig['rate'])} vs {fmt_num(conf['rate'])} events/s ({fmt_pct(ratio)})",
                    ratio >= 0.8 and min(fig["delivered"]) >= n,
                )
            )
    section.extra = {"figures": figures, "n": n, "rounds": rounds, "record_bytes": size, "crc32c": crc}
    section.notes.append(f"kafka-python's CRC32C of record batches: {crc}.")
    section.notes.append(
        f"{n:,} records of {size:.0f} bytes per run, {rounds} rounds per peer in rotating order, 3-partition topic "
        f"on the local broker; events/s is the median over rounds, the ratio the median of per-round ratios."
    )
    section.notes.append(
        "The logpipe exporter rows time the application handing over already encoded records until the last "
        "acknowledgement: the like-for-like comparison with a producer handed pre-serialised bytes. The log-call "
        "rows add the chain's rendering (workload 1) in the application's thread. Under LOGPIPE_ISOLATION=auto "
        "the Kafka exporter runs in a child process on kafka-python and in the application's process on "
        "confluent-kafka; the `LOGPIPE_ISOLATION=thread` rows run kafka-python in the application's process, "
        "where its Python code shares the application's GIL."
    )
    if confluent_note:
        section.notes.append(confluent_note)
    section.notes.extend(analysis(figures))
    section.seconds = time.perf_counter() - started
    return section


def crc_in_extra() -> str:
    """Whether ``pip install logpipe[kafka]`` brings crc32c, from the installed metadata."""
    from importlib import metadata

    try:
        requires = metadata.requires("logpipe") or []
    except metadata.PackageNotFoundError:
        return "logpipe is not installed"
    kafka = [r for r in requires if 'extra == "kafka"' in r.replace("'", '"')]
    if any(r.lower().startswith("crc32c") for r in kafka):
        return "logpipe's `kafka` extra requires it"
    return "logpipe's `kafka` extra, as installed here, does not require it"


def analysis(figures: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    lp, lt, raw = figures.get("all/logpipe"), figures.get("all/logpipe_thread"), figures.get("all/raw")
    calls, calls_t = figures.get("all/calls"), figures.get("all/calls_thread")
    if lp and lt and raw:
        out.append(
            f"**Reading the rows.** The dispatcher keeps up to three batches (`LOGPIPE_KAFKA_IN_FLIGHT_BATCHES`) "
            f"handed to kafka-python while it waits for the oldest one's acknowledgements, so the producer never "
            f"idles between batches (stop-and-wait per 512-record batch measured 85.8% of the raw producer at "
            f"acks=all before). At acks=all the exporter reaches {fmt_pct(lp['ratio'])} of the raw producer in its "
            f"child process and {fmt_pct(lt['ratio'])} in the application's process. In the child, the application's "
            f"side only moves batches into a pipe and kafka-python's Python code runs on the other core, but both "
            f"processes, the broker and the raw peer's single process compete for the same two cores."
        )
    if calls and calls_t:
        out.append(
            f"With the chain rendering each record in the same run (the log-call rows), the child process makes "
            f"the difference: {fmt_num(calls['rate'])} events/s ({fmt_pct(calls['ratio'])}) against "
            f"{fmt_num(calls_t['rate'])} ({fmt_pct(calls_t['ratio'])}) with the exporter in process, where "
            f"rendering and the client's Python code take turns on one GIL."
        )
    pure = figures.get("all/rawpure")
    if pure and raw:
        out.append(
            f"Without the `crc32c` package ({crc_in_extra()}) kafka-python "
            f"checksums record batches in pure Python: the raw producer then makes {fmt_num(pure['rate'])} events/s "
            f"instead of {fmt_num(raw['rate'])} ({fmt_pct(pure['ratio'])})."
        )
    ck, calls_ck = figures.get("all/logpipe_ck"), figures.get("all/calls_ck")
    conf = figures.get("all/confluent")
    if ck and raw and conf:
        out.append(
            f"logpipe's exporter on confluent-kafka (`LOGPIPE_KAFKA_CLIENT=confluent-kafka`, in process, the same "
            f"pipelined export contract) makes {fmt_num(ck['rate'])} events/s at acks=all from pre-encoded records, "
            f"{ck['rate'] / raw['rate']:.1f}x the raw kafka-python producer and {fmt_pct(ck['rate'] / conf['rate'])} "
            f"of the raw confluent-kafka producer"
            + (
                f"; with the chain rendering every record, {fmt_num(calls_ck['rate'])} events/s "
                f"({fmt_pct(calls_ck['rate'] / conf['rate'])} of the raw confluent-kafka producer)."
                if calls_ck
                else "."
            )
        )
    if conf and raw:
        out.append(
            f"confluent-kafka (librdkafka, C threads outside the GIL) makes {fmt_num(conf['rate'])} events/s, "
            f"{conf['rate'] / raw['rate']:.1f}x kafka-python: the ceiling of an exporter built on it."
        )
    return out


def _delete_topic(topic: str) -> None:
    try:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP, client_id="logpipe-bench")
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
    except Exception:
        pass
