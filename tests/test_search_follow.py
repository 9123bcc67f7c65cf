"""``logpipe search --follow`` as a person runs it: a real process, records arriving, Ctrl-C to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import Service, wait_until
from logpipe import elasticsearch as es
from logpipe.exporters.elasticsearch import ElasticsearchExporter, ElasticsearchExporterOptions
from logpipe.record import make_record


class Follow:
    """``logpipe search -f --json ...`` in a child process; its stdout lines collected by a thread."""

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from logpipe.cli import main; main()",
             "search", "-f", "--json", "--interval", "0.2", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
        )  # fmt: skip
        self.docs: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.docs.append(orjson.loads(raw))

    def ids(self) -> list[str]:
        return [d["Id"] for d in self.docs]

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the exit status and stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        self._reader.join(10)
        return self.proc.returncode, err.decode()


@pytest.fixture
def prefix(es_service: Service) -> Iterator[str]:
    from elasticsearch import Elasticsearch

    name = f"lpfollow-{uuid.uuid4().hex[:10]}"
    yield name
    with Elasticsearch(es_service.address) as client:
        client.options(ignore_status=404).indices.delete(index=f"{name}-*")
        client.options(ignore_status=404).indices.delete_index_template(name=es.template_name(name))


@pytest.mark.elasticsearch
def test_follow_prints_each_new_record_once(es_service: Service, prefix: str, tmp_path: Path) -> None:
    """Records arriving while following are printed once each, including several with the same Time."""
    exporter = ElasticsearchExporter(
        ElasticsearchExporterOptions(hosts=(es_service.address,), index_prefix=prefix, replicas=0)
    )
    try:
        before = make_record(type="info", msg="before the start", service="shop")
        exporter.export([before])
        follow = Follow("--hosts", es_service.address, "--index-prefix", prefix, "--service", "shop", cwd=tmp_path)
        wait_until(lambda: follow.ids() == [before.id], timeout=30)
        same = time.time()
        arrived = []
        for round_ in range(3):
            batch = [make_record(type="info", msg=f"r{round_} n{n}", service="shop", ts=same) for n in range(5)]
            batch.append(make_record(type="info", msg="other service", service="store", ts=same))
            exporter.export(batch)
            arrived += [r.id for r in batch if r.decoded()["Service"] == "shop"]
            expected = 1 + len(arrived)
            wait_until(lambda n=expected: len(follow.ids()) >= n, timeout=30)  # type: ignore[misc]
        status, err = follow.interrupt()
    finally:
        exporter.shutdown()
    assert sorted(follow.ids()) == sorted([before.id, *arrived])  # every one, none twice, the filter kept
    assert status == 0 and "Traceback" not in err and "Aborted" not in err


def test_follow_files_and_ctrl_c(tmp_path: Path) -> None:
    """Without Elasticsearch: lines appended to the file exporter's file are printed; Ctrl-C exits cleanly."""
    path = tmp_path / "logs" / "logpipe.jsonl"
    path.parent.mkdir()
    path.write_bytes(make_record(type="info", msg="old").payload + b"\n")
    follow = Follow("--level", "error", cwd=tmp_path)
    new = [make_record(type="error", msg=f"new {n}") for n in range(3)]
    with open(path, "ab") as handle:
        for record in new:
            handle.write(record.payload + b"\n")
            handle.write(make_record(type="info", msg="not an error").payload + b"\n")
            handle.flush()
    wait_until(lambda: len(follow.ids()) >= 3, timeout=30)
    status, err = follow.interrupt()
    assert follow.ids() == [r.id for r in new]
    assert status == 0 and "Traceback" not in err
