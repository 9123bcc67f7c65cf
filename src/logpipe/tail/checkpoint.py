"""The registry: how far Kafka has acknowledged each file, kept as one versioned JSON document.

``{"version": 1, "files": [{"dev", "ino", "path", "offset", "head", "head_len", "updated"}]}``,
replaced atomically through `logpipe.durable.replace` (temp file, fsync,
rename, directory fsync), so a crash leaves the old or the new registry,
never half of one. Vector's ``checkpointer`` is the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from .. import durable
from ..exceptions import ConfigError
from .fingerprint import Key
from .options import ENV_PREFIX

__all__ = ["REGISTRY_VERSION", "Registry", "RegistryEntry"]

REGISTRY_VERSION = 1


@dataclass
class RegistryEntry:
    """What is known of one file: where it was last seen and how far Kafka has it."""

    dev: int
    ino: int
    path: str
    #: Bytes from the start of the file whose lines are acknowledged (always at a line end).
    offset: int
    #: CRC32 of the file's first ``head_len`` bytes, to tell a reused inode from the file it was.
    head: int = 0
    head_len: int = 0

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)


class Registry:
    """The acknowledged offsets, on disk as one JSON document replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[Key, RegistryEntry] = {}

    def load(self) -> Registry:
        """Read the file (a missing one is an empty registry); raises ConfigError when it is unreadable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return self
        except OSError as exc:
            raise ConfigError(f"{ENV_PREFIX}REGISTRY={str(self.path)!r}: cannot read the registry: {exc}") from None
        try:
            doc = orjson.loads(data)
            if doc.get("version") != REGISTRY_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {REGISTRY_VERSION}")
            for item in doc["files"]:
                entry = RegistryEntry(
                    int(item["dev"]),
                    int(item["ino"]),
                    str(item["path"]),
                    int(item["offset"]),
                    int(item.get("head", 0)),
                    int(item.get("head_len", 0)),
                )
                self.entries[entry.key] = entry
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(
                f"{ENV_PREFIX}REGISTRY={str(self.path)!r}: not a logpipe tail registry ({exc}); "
                f"move it away to start over (every file is then read from the start)"
            ) from None
        return self

    def save(self) -> None:
        """Replace the file atomically with the current entries."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        files = [
            {
                "dev": e.dev,
                "ino": e.ino,
                "path": e.path,
                "offset": e.offset,
                "head": e.head,
                "head_len": e.head_len,
                "updated": now,
            }
            for e in sorted(self.entries.values(), key=lambda e: e.path)
        ]
        data = orjson.dumps({"version": REGISTRY_VERSION, "files": files}, option=orjson.OPT_INDENT_2) + b"\n"
        durable.make_dirs(self.path.parent)
        durable.replace(self.path, data, temp=self.path.with_name(self.path.name + ".tmp"))
