"""The durable write helpers: whole writes, atomic replacement, appends that create what they need."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from logpipe import durable


def test_write_all_writes_everything_through_a_short_writing_pipe() -> None:
    """A pipe takes at most its buffer per write; write_all must loop until all is written."""
    data = os.urandom(1 << 20)
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        durable.write_all(write_fd, data)
    finally:
        os.close(write_fd)
        reader.join(10)
        os.close(read_fd)
    assert bytes(received) == data


def test_append_creates_parents_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "dead.jsonl"
    durable.append(path, b"one\n")
    durable.append(path, b"two\n")
    assert path.read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 & ~_umask()  # log data: the owner only


def test_replace_swaps_the_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    temp = tmp_path / "registry.json.tmp"
    durable.replace(path, b"old", temp=temp)
    durable.replace(path, b"new", temp=temp)
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.json"]


def test_fsync_dir_ignores_a_missing_directory(tmp_path: Path) -> None:
    durable.fsync_dir(tmp_path / "missing")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
