"""Status files and ``logpipe health``: what the container image's HEALTHCHECK relies on."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from conftest import wait_until
from logpipe.cli import main
from logpipe.exceptions import ConfigError
from logpipe.health import Heartbeat, check, read_status, redact
from logpipe.record import info
from logpipe.tail import Tailer, load_options
from logpipe.testing import InMemoryExporter


@dataclass
class FakeStats:
    indexed: int = 0
    errors: int = 0
    last_error: str | None = None
    state: str = "starting"
    started: float = field(default_factory=time.monotonic)
    lag: dict[str, int] = field(default_factory=dict)


def status(**values: object) -> dict[str, object]:
    now = time.time()
    base: dict[str, object] = {"command": "ship", "state": "running", "state_since": now - 5, "updated": now}
    base.update(values)
    return base


# -- the file ---------------------------------------------------------------------------------


def test_heartbeat_writes_starting_at_once_then_counters(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ship.json"
    beat = Heartbeat("ship", path, 2.0, "LOGPIPE_SHIP_STATUS_FILE")
    first = read_status(path)
    assert first["state"] == "starting" and first["command"] == "ship" and first["interval"] == 2.0

    beat(FakeStats(indexed=7, state="running", lag={"t[0]": 3, "t[1]": 4}, last_error="boom"))
    second = read_status(path)
    assert second["state"] == "running"
    assert second["indexed"] == 7 and second["lag"] == 7 and second["last_error"] == "boom"
    assert "started" not in second  # a monotonic reading means nothing to another process
    assert second["state_since"] >= first["state_since"]
    assert not list(path.parent.glob(".*tmp"))  # replaced atomically, no temp left

    beat(FakeStats(indexed=9, state="running"))
    assert read_status(path)["state_since"] == second["state_since"]  # same state: same since


def test_unwritable_status_file_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="LOGPIPE_TAIL_STATUS_FILE"):
        Heartbeat("tail", blocker / "tail.json", 2.0, "LOGPIPE_TAIL_STATUS_FILE")


def test_not_a_status_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"[1, 2]")
    with pytest.raises(ValueError):
        read_status(path)


# -- the verdict ------------------------------------------------------------------------------


def test_fresh_running_status_is_healthy() -> None:
    verdict = check(status(indexed=5))
    assert verdict.healthy, verdict.reason
    assert "indexed=5" in verdict.reason


def test_stale_status_is_unhealthy() -> None:
    verdict = check(status(updated=time.time() - 61), max_age=60)
    assert not verdict.healthy
    assert "not updated" in verdict.reason


def test_stopped_is_unhealthy() -> None:
    assert not check(status(state="stopped")).healthy


def test_waiting_is_healthy_until_max_waiting() -> None:
    now = time.time()
    assert check(status(state="waiting for Elasticsearch", state_since=now - 10), max_waiting=300).healthy
    late = check(status(state="waiting for Elasticsearch", state_since=now - 301), max_waiting=300)
    assert not late.healthy and "waiting for Elasticsearch" in late.reason


def test_dead_process_on_this_host_is_unhealthy() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    verdict = check(status(pid=child.pid, host=socket.gethostname()))
    assert not verdict.healthy and "gone" in verdict.reason
    assert check(status(pid=child.pid, host="another-host")).healthy  # a pid elsewhere proves nothing


def test_credentials_in_the_last_error_are_not_printed() -> None:
    verdict = check(status(last_error="cannot reach https://elastic:s3cret@es:9200/_bulk"))
    assert "s3cret" not in verdict.reason
    assert "https://***@es:9200" in verdict.reason
    assert redact("http://es:9200") == "http://es:9200"


# -- the command ------------------------------------------------------------------------------


def _write(path: Path, **values: object) -> Path:
    path.write_bytes(orjson.dumps(status(**values)))
    return path


def test_health_command_exit_codes(tmp_path: Path) -> None:
    fresh = _write(tmp_path / "ship.json")
    stale = _write(tmp_path / "tail.json", updated=time.time() - 600)
    runner = CliRunner()

    ok = runner.invoke(main, ["health"], env={"LOGPIPE_SHIP_STATUS_FILE": str(fresh)})
    assert ok.exit_code == 0, ok.output
    assert "healthy: ship: running" in ok.output

    bad = runner.invoke(
        main, ["health"], env={"LOGPIPE_SHIP_STATUS_FILE": str(fresh), "LOGPIPE_TAIL_STATUS_FILE": str(stale)}
    )
    assert bad.exit_code == 1 and "not updated" in bad.output

    missing = runner.invoke(main, ["health", "--status-file", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "no status file yet" in missing.output

    unset = runner.invoke(main, ["health"], env={"LOGPIPE_SHIP_STATUS_FILE": None, "LOGPIPE_TAIL_STATUS_FILE": None})
    assert unset.exit_code == 2 and "LOGPIPE_SHIP_STATUS_FILE" in unset.output

    wrong = runner.invoke(main, ["health"], env={"LOGPIPE_SHIP_STATUS_INTERVAL": "soon"})
    assert wrong.exit_code == 2 and "LOGPIPE_SHIP_STATUS_INTERVAL" in wrong.output


def test_a_running_tailer_keeps_its_status_file_fresh_and_says_stopped_at_the_end(tmp_path: Path) -> None:
    """The real loop: the status follows the tailer through start, progress and stop."""
    (tmp_path / "app.log").write_bytes(b"".join(info(f"e{i}", "app.f", {}).payload + b"\n" for i in range(5)))
    path = tmp_path / "status" / "tail.json"
    opts = load_options(
        {
            "paths": (str(tmp_path / "*.log"),),
            "registry": tmp_path / "registry.json",
            "dead_letter": tmp_path / "dead.jsonl",
            "status_interval": 0.1,
            "status_file": path,
            "poll_interval": 0.01,
            "scan_interval": 0.05,
        },
        environ={},
    )
    assert opts.status_file is not None
    beat = Heartbeat("tail", opts.status_file, opts.status_interval, "LOGPIPE_TAIL_STATUS_FILE")
    tailer = Tailer(opts, InMemoryExporter(), progress=beat)
    thread = threading.Thread(target=tailer.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: read_status(path).get("sent") == 5, timeout=20)
        first = read_status(path)["updated"]
        wait_until(lambda: read_status(path)["updated"] > first, timeout=20)  # idle, and still beating
        assert check(read_status(path), max_age=5).healthy
    finally:
        tailer.stop()
        thread.join(30)
    final = read_status(path)
    assert final["state"] == "stopped"
    assert not check(final).healthy


@pytest.mark.parametrize(
    ("command", "variable"), [("ship", "LOGPIPE_SHIP_STATUS_FILE"), ("tail", "LOGPIPE_TAIL_STATUS_FILE")]
)
def test_commands_refuse_a_status_file_they_cannot_write_before_connecting(
    tmp_path: Path, command: str, variable: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["-t", "logs"] if command == "ship" else [str(tmp_path / "*.log")]
    result = CliRunner().invoke(
        main,
        [command, *args, "--quiet"],
        env={variable: str(blocker / "status.json"), "LOGPIPE_TAIL_REGISTRY": str(tmp_path / "reg.json")},
    )
    assert result.exit_code == 2, result.output
    assert variable in result.output
