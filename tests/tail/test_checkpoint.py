"""logpipe.tail.checkpoint: the registry, a versioned JSON document replaced atomically."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from logpipe.exceptions import ConfigError
from logpipe.tail import Registry, RegistryEntry


class TestRegistry:
    def test_round_trip_and_atomic_replace(self, tmp_path: Path) -> None:
        registry = Registry(tmp_path / "r" / "registry.json")
        registry.entries[(1, 2)] = RegistryEntry(1, 2, "/a.log", 10, head=99, head_len=10)
        registry.entries[(1, 3)] = RegistryEntry(1, 3, "/b.log", 0)
        registry.save()
        assert sorted(os.listdir(tmp_path / "r")) == ["registry.json"]  # the temp file was renamed
        again = Registry(registry.path).load()
        assert again.entries == registry.entries
        doc = orjson.loads(registry.path.read_bytes())
        assert doc["version"] == 1 and {f["path"] for f in doc["files"]} == {"/a.log", "/b.log"}

    def test_missing_registry_is_empty(self, tmp_path: Path) -> None:
        assert Registry(tmp_path / "none.json").load().entries == {}

    def test_unreadable_registry_names_the_variable(self, tmp_path: Path) -> None:
        path = tmp_path / "registry.json"
        path.write_text("{not json")
        with pytest.raises(ConfigError, match="LOGPIPE_TAIL_REGISTRY"):
            Registry(path).load()
