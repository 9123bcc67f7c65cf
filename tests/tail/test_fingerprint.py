"""logpipe.tail.fingerprint: a file's identity and the CRC of its first bytes."""

from __future__ import annotations

import os
from pathlib import Path

from logpipe.tail.fingerprint import HEAD_BYTES, grown_head, head_crc, key_of, same_head


def test_key_is_device_and_inode_and_survives_a_rename(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"x\n")
    key = key_of(path.stat())
    path.rename(tmp_path / "a.log.1")
    assert key_of((tmp_path / "a.log.1").stat()) == key


def test_head_tells_a_rewritten_file(tmp_path: Path) -> None:
    """Same beginning: same file; other first bytes (or none yet known): as the head says."""
    path = tmp_path / "a.log"
    path.write_bytes(b"first line\nsecond\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        head = grown_head(fd, (0, 0), committed=11)
        assert head == (head_crc(fd, 11), 11)
        assert same_head(fd, head) and same_head(fd, (0, 0))
        path.write_bytes(b"other line\n")
        assert not same_head(fd, head)
    finally:
        os.close(fd)


def test_head_grows_with_what_is_committed_up_to_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"y" * (HEAD_BYTES * 2))
    fd = os.open(path, os.O_RDONLY)
    try:
        small = grown_head(fd, (0, 0), committed=10)
        assert small[1] == 10
        assert grown_head(fd, small, committed=5) == small  # never shrinks
        assert grown_head(fd, small, committed=HEAD_BYTES * 2)[1] == HEAD_BYTES
    finally:
        os.close(fd)
