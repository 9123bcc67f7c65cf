"""Files that hold log data are private: spool, registry and dead letters 0600, their directories 0700."""

from __future__ import annotations

import stat
from pathlib import Path

from logpipe import deadletter
from logpipe.record import info
from logpipe.spool import Spool
from logpipe.tail import Registry


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_spool_segments_offsets_and_directory(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool" / "kafka")
    spool.append([info("x", "f").payload])
    spool.close()
    directory = tmp_path / "spool" / "kafka"
    assert mode(directory) == 0o700
    assert all(mode(p) == 0o600 for p in directory.iterdir() if p.is_file())
    chunk = spool.read(10)
    assert chunk is not None
    spool.commit(chunk, 0)


def test_registry_and_dead_letters(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "state" / "registry.json")
    registry.save()
    assert mode(tmp_path / "state") == 0o700 and mode(tmp_path / "state" / "registry.json") == 0o600
    letters = tmp_path / "dead" / "letters.jsonl"
    deadletter.FileDeadLetters(letters).write([deadletter.DeadLetter(b"v", "r")])
    assert mode(letters.parent) == 0o700 and mode(letters) == 0o600
