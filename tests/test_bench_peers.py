"""The C-peer workloads' logic, without the servers: the doubling search, bulk bodies, rsyslog configs, measuring.

Like test_bench.py these assert structure and behaviour, never timings. The
workloads themselves (``python -m bench --only peers_file_kafka,es_ceiling,
peers_kafka_es,ship_scale --quick``) need the broker and the node.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import __main__ as bench_main  # noqa: E402
from bench import es_ceiling, peers  # noqa: E402
from bench.common import Skip  # noqa: E402


class TestDoublingSearch:
    def test_stops_after_two_steps_that_do_not_improve(self) -> None:
        """100, 200, 400 ... until two steps in a row are not better than the best so far; the best is returned."""
        curve = {100: 10.0, 200: 18.0, 400: 25.0, 800: 24.0, 1600: 24.5, 3200: 40.0}
        batch, rate, steps = es_ceiling.doubling_search(curve.__getitem__)
        assert (batch, rate) == (400, 25.0)
        assert [b for b, _ in steps] == [100, 200, 400, 800, 1600]  # 3200 never tried

    def test_one_flat_step_does_not_end_the_search(self) -> None:
        """A noisy step (200 no better than 100) is followed by one more: 400 is found."""
        curve = {100: 34.2, 200: 34.0, 400: 58.0, 800: 52.0, 1600: 50.0}
        batch, rate, steps = es_ceiling.doubling_search(curve.__getitem__)
        assert (batch, rate) == (400, 58.0)
        assert [b for b, _ in steps] == [100, 200, 400, 800, 1600]

    def test_a_gain_within_the_noise_counts_as_flat_but_is_kept(self) -> None:
        """A step better by less than min_gain is kept as the best, and counts toward stopping."""
        curve = {100: 10.0, 200: 10.1, 400: 10.2, 800: 50.0}
        batch, rate, steps = es_ceiling.doubling_search(curve.__getitem__, min_gain=0.03)
        assert (batch, rate) == (400, 10.2)
        assert len(steps) == 3

    def test_the_limit_bounds_the_batch(self) -> None:
        """A curve that always improves stops at the limit."""
        batch, _rate, steps = es_ceiling.doubling_search(float, start=100, limit=1000)
        assert batch == 800
        assert [b for b, _ in steps] == [100, 200, 400, 800]


class TestBulkBodies:
    def test_create_actions_with_the_record_id_and_daily_index(self) -> None:
        """Each body holds *batch* create actions, _id = Id, the index logpipe's shipper would pick."""
        from bench.kafka_throughput import make_records

        from logpipe import elasticsearch as es

        records = make_records(5)
        payloads = es_ceiling.bodies(records, "bench-x", 2)
        assert len(payloads) == 3
        lines = b"".join(payloads).splitlines()
        assert len(lines) == 10
        for action, source, record in zip(lines[::2], lines[1::2], records, strict=True):
            meta = json.loads(action)["create"]
            assert meta == {"_index": es.index_name("bench-x", record.ts), "_id": record.id}
            assert source == record.payload

    def test_post_all_sends_every_body_on_several_connections(self) -> None:
        """Every body is POSTed to /_bulk once; failed items are counted from the answers."""
        seen: list[bytes] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    seen.append(body)
                answer = b'{"errors":true,"items":[{"create":{"error":{"type":"x"}}}]}' if b"bad" in body else b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            bodies = [f"body {i}\n".encode() for i in range(20)] + [b"bad\n"]
            seconds, failed = es_ceiling.post_all(bodies, 4, url=f"http://127.0.0.1:{server.server_port}")
        finally:
            server.shutdown()
        assert sorted(seen) == sorted(bodies)
        assert failed == 1
        assert seconds > 0


class TestRsyslogConfig:
    def test_file_to_kafka_sends_the_raw_line_with_acks_all(self, tmp_path: Path) -> None:
        """imfile reads the file, omkafka sends %msg% (the line as is) to the topic with acks=all."""
        conf = peers.rsyslog_file_to_kafka(tmp_path / "app.jsonl", "t1", tmp_path / "work", "127.0.0.1:19092")
        assert 'module(load="imfile"' in conf and 'module(load="omkafka")' in conf
        assert f'file="{tmp_path / "app.jsonl"}"' in conf
        assert 'string="%msg%"' in conf
        assert 'topic="t1"' in conf and 'broker=["127.0.0.1:19092"]' in conf
        assert 'topicConfParam=["acks=all"]' in conf
        assert f'workDirectory="{tmp_path / "work"}"' in conf

    def test_kafka_to_es_uses_logpipe_index_and_id(self, tmp_path: Path) -> None:
        """Bulk mode, ES 8, daily index from Time, _id from Id as create, the shipper's batch and workers."""
        conf = peers.rsyslog_kafka_to_es(
            "t1", "g1", "logs", tmp_path, batch=500, workers=3, es_url="http://127.0.0.1:19200"
        )
        assert 'esVersion.major="8"' in conf and 'bulkmode="on"' in conf
        assert 'string="logs-%$!Time:1:4%.%$!Time:6:7%.%$!Time:9:10%"' in conf
        assert 'dynSearchIndex="on"' in conf and 'dynbulkid="on"' in conf and 'string="%$!Id%"' in conf
        assert 'writeoperation="create"' in conf
        assert 'server="127.0.0.1" serverport="19200"' in conf
        assert 'queue.dequeueBatchSize="500"' in conf and 'queue.workerThreads="3"' in conf
        assert 'consumergroup="g1"' in conf and "auto.offset.reset=earliest" in conf

    def test_quoting(self, tmp_path: Path) -> None:
        """Quotes and backslashes in values cannot break out of rsyslog's strings."""
        conf = peers.rsyslog_file_to_kafka(Path('/tmp/a"b\\c'), "t", tmp_path)
        assert 'file="/tmp/a\\"b\\\\c"' in conf

    @pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog not installed (the bench installs it)")
    def test_rsyslog_accepts_both_configurations(self, tmp_path: Path) -> None:
        """``rsyslogd -N1`` validates what the bench renders (modules present: rsyslog-kafka, -elasticsearch)."""
        for name, conf in {
            "fk": peers.rsyslog_file_to_kafka(tmp_path / "app.jsonl", "t1", tmp_path / "fk"),
            "ke": peers.rsyslog_kafka_to_es("t1", "g1", "logs", tmp_path / "ke"),
        }.items():
            (tmp_path / name).mkdir()
            path = tmp_path / f"{name}.conf"
            path.write_text(conf)
            if peers.missing_packages():
                pytest.skip(f"missing {peers.missing_packages()}")
            done = subprocess.run(["rsyslogd", "-N1", "-f", str(path)], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr


class TestTools:
    def test_a_missing_package_skips_with_the_install_problem(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rows are skipped only for a package that is absent, and the reason is the install's."""
        monkeypatch.setattr(peers, "_present", lambda thing: thing != "omkafka.so")
        tools = peers.Tools(versions={"kcat": "1.7.1-2"}, problem="not root (uid 1000)")
        tools.require("kcat")
        with pytest.raises(Skip, match="rsyslog-kafka not installed: not root"):
            tools.require("rsyslog", "rsyslog-kafka")
        assert "Could not install" in tools.note() and "`kcat` 1.7.1-2" in tools.note()


class TestWatched:
    @pytest.mark.skipif(
        importlib.util.find_spec("psutil") is None, reason="psutil: pip install -r bench/requirements.txt"
    )
    def test_measures_cpu_wall_and_rss_of_the_whole_tree(self) -> None:
        """CPU of a child's own child counts (wait4's rusage); the peak RSS is the tree's, not the bench's."""
        code = (
            "import subprocess, sys; "
            "subprocess.run([sys.executable, '-c', 'sum(range(3_000_000)); import time; time.sleep(0.3)']); "
            "sum(range(3_000_000))"
        )
        usage = peers.Watched([sys.executable, "-c", code]).finish(60)
        assert usage.returncode == 0
        assert usage.wall > 0.3
        assert usage.cpu > 0.05
        assert 1_000_000 < usage.peak_rss < 500 * 1024 * 1024

    @pytest.mark.skipif(
        importlib.util.find_spec("psutil") is None, reason="psutil: pip install -r bench/requirements.txt"
    )
    def test_a_probe_reads_the_cores_each_process_used(self) -> None:
        """Cores between two readings per named process, plus the machine's; an invisible process is left out."""
        probe = peers.CPUProbe({"bench": os.getpid(), "absent": None})
        start = probe.read()
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:
            pass
        end = probe.read()
        cores = peers.CPUProbe.cores(start, end)
        assert set(cores) == {"bench", "machine"}
        assert 0.25 < end.seconds["bench"] - start.seconds["bench"] < 1.0  # CPU seconds, whatever the load
        assert 0 < cores["bench"] <= 1.5
        assert cores["machine"] > 0
        assert set(probe.with_process("other", os.getpid()).read().seconds) == {"bench", "other"}

    @pytest.mark.skipif(
        importlib.util.find_spec("psutil") is None, reason="psutil: pip install -r bench/requirements.txt"
    )
    def test_the_process_listening_on_a_port_is_found(self) -> None:
        """By host:port or URL; a port nobody listens on gives None."""
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            assert peers.listening_pid(f"127.0.0.1:{port}") == os.getpid()
            assert peers.listening_pid(f"http://127.0.0.1:{port}") == os.getpid()
        assert peers.listening_pid(f"127.0.0.1:{port}") is None


class TestIndexWatch:
    def test_it_counts_created_documents_without_refreshing(self) -> None:
        """The watch reads the primaries' index_total; it never asks the node to refresh (which costs it CPU)."""
        from bench.peers_kafka_es import IndexWatch

        class Indices:
            def __init__(self) -> None:
                self.total, self.calls = 0, []

            def stats(self, **kw: object) -> dict[str, object]:
                self.calls.append(("stats", kw))
                self.total = min(self.total + 40, 100)
                return {"_all": {"primaries": {"indexing": {"index_total": self.total}}}}

            def refresh(self, **kw: object) -> None:
                self.calls.append(("refresh", kw))

        class Client:
            indices = Indices()

            def options(self, **kw: object) -> Client:
                return self

        client = Client()
        watch = IndexWatch(client, "lp", 100, interval=0.01)
        try:
            assert watch.wait(10)
        finally:
            watch.stop()
        assert watch.last_count == 100 and watch.first is not None and watch.done is not None
        assert watch.first <= watch.done
        # docs/s over the window from the first count to the last, the first count up to an interval late
        assert watch.rate(100) == pytest.approx(100 / (watch.done - watch.first + 0.005))
        assert {name for name, _ in client.indices.calls} == {"stats"}
        assert client.indices.calls[0][1] == {"index": "lp-*", "metric": "indexing"}


def test_the_new_workloads_are_registered() -> None:
    """The runner knows the C-peer workloads; each module has a TITLE and run()."""
    for key in ("peers_file_kafka", "es_ceiling", "peers_kafka_es", "ship_scale"):
        assert key in bench_main.KEYS
        module = importlib.import_module(dict(bench_main.WORKLOADS)[key])
        assert key == module.KEY and module.TITLE and callable(module.run)
    # the ceiling runs before the ship peers, which reuse its setting
    assert bench_main.KEYS.index("es_ceiling") < bench_main.KEYS.index("peers_kafka_es")


class TestBeforeAfter:
    def test_the_base_revision_is_unpacked_and_imported_from_its_own_src(self, tmp_path: Path) -> None:
        from bench import before_after

        src = before_after._revision_src(tmp_path)
        assert src is not None and (src / "logpipe" / "__init__.py").is_file()
        code = "import sys; sys.path.insert(0, sys.argv[1]); import logpipe; print(logpipe.__file__)"
        out = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, check=True)
        assert out.stdout.strip().startswith(str(src))

    def test_rows_compare_each_round_with_the_before_round(self) -> None:
        from bench import before_after
        from bench.common import Section

        runs = {
            "before": [{"rate": 100.0, "cpu": 1.0, "rss": 1 << 20, "delivered": 10}] * 3,
            "after-kafka-python": [{"rate": 90.0, "cpu": 1.0, "rss": 1 << 20, "delivered": 10}] * 3,
            "after": [
                {"rate": r, "cpu": 0.5, "rss": 1 << 20, "delivered": d} for r, d in ((300.0, 10), (200, 10), (250, 9))
            ],
        }
        section = Section(key="k", title="t", columns=[])
        before_after._table(section, "tail", runs, 10, "cpu", "us/line")
        after = section.rows[2]
        assert after["vs before"] == "2.50x"
        assert after["delivered"] == "9/10"  # the worst round shows, not the best
        assert section.rows[1]["vs before"] == "0.90x"
        before_after._targets(section, runs, runs)
        assert [t.met for t in section.targets] == [True, True]
