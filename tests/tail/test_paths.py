"""logpipe.tail.paths: which files the patterns match."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logpipe.tail.paths import scan


def test_regular_files_once_each_own_files_left_out(tmp_path: Path) -> None:
    """A hard link is one file; directories, the registry and its temp file are not followed."""
    (tmp_path / "a.log").write_bytes(b"a\n")
    os.link(tmp_path / "a.log", tmp_path / "b.log")
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "reg.log").write_bytes(b"{}")
    (tmp_path / "reg.log.tmp").write_bytes(b"{}")
    found = scan([str(tmp_path / "*.log*")], exclude={str(tmp_path / "reg.log")})
    assert sorted(found.values()) == [str(tmp_path / "a.log")]


def test_home_is_expanded_and_paths_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x.log").write_bytes(b"")
    assert list(scan(["~/x.log"]).values()) == [str(tmp_path / "x.log")]
