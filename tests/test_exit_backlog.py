"""An application that ends with records undelivered says so: how many, where, and how they will be sent."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from logpipe.spool.backlog import SpoolCounter

JOB = """
import structlog, logpipe
structlog.configure(processors=logpipe.processors(
    exporter="kafka", exporter_options={"kafka": {"bootstrap_servers": "127.0.0.1:%d"}}, local_render="none"))
log = structlog.get_logger()
for i in range(3000):
    log.info("job", i=i)
assert logpipe.flush(60)
print(logpipe.stats()["kafka"].waiting, flush=True)
"""


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_job_that_ends_during_an_outage_says_what_waits_in_the_spool(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JOB % _closed_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    spool = (tmp_path / "logs" / "spool" / "kafka").resolve()
    waiting = SpoolCounter().backlog(spool).records
    assert waiting == 3000 and int(done.stdout) == 3000  # logpipe.stats() said so before exit too
    line = next(line for line in done.stderr.splitlines() if "wait in" in line)
    assert line == (
        f"logpipe: kafka: 3,000 record(s) wait in {spool}; they are sent when the application starts again, "
        f"or now with: logpipe replay {spool} --exporter kafka"
    )
    assert "Traceback" not in done.stderr


def test_nothing_is_said_when_everything_was_delivered(tmp_path: Path) -> None:
    code = "import structlog, logpipe\nstructlog.configure(processors=logpipe.processors(local_render='none'))\n"
    code += "structlog.get_logger().info('fine')\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
