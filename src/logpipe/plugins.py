"""Finding exporters by name through the ``logpipe.exporters`` entry-point group.

logpipe's own exporters are registered in its pyproject exactly as a third
party registers one, so there is one lookup path. Only the exporters that are
named get imported: selecting ``file`` never imports the Kafka client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from . import config
from .exceptions import ConfigError
from .exporters.base import Exporter

__all__ = ["DISTRIBUTION", "GROUP", "available", "create", "is_own", "load_class", "options_prefix"]

#: The name logpipe is installed under (``pip install logpipe-kafkalog``); the import name and the
#: command stay ``logpipe``. The index's ``logpipe`` is an unrelated project, so metadata look-ups
#: and install hints must use this name, never the import name.
DISTRIBUTION = "logpipe-kafkalog"


def is_own(dist_name: str) -> bool:
    """Whether *dist_name* (as metadata spells it: any case, ``_`` or ``.``) is logpipe's distribution."""
    return re.sub(r"[-_.]+", "-", dist_name).lower() == DISTRIBUTION


GROUP = "logpipe.exporters"


def available() -> dict[str, EntryPoint]:
    """Installed exporter plugins by name (not imported)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_class(name: str, *, variable: str = "LOGPIPE_EXPORTER") -> type[Exporter]:
    """Import the exporter class registered as *name*.

    Raises `ConfigError` naming *variable* and listing what is installed when
    the name is unknown or its plugin fails to import (a missing extra).
    """
    installed = available()
    entry = installed.get(name)
    if entry is None:
        names = ", ".join(sorted(installed)) or "none"
        raise ConfigError(f"{variable}: unknown exporter {name!r}; installed exporters: {names}")
    try:
        cls = entry.load()
    except ImportError as exc:
        raise ConfigError(
            f"{variable}: exporter {name!r} cannot be imported ({exc}); "
            f"install its extra, e.g. pip install '{DISTRIBUTION}[{name}]'"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Exporter)):
        raise ConfigError(f"{variable}: entry point {name!r} ({entry.value}) is not an Exporter class")
    return cls


def options_prefix(name: str) -> str:
    """``kafka`` -> ``LOGPIPE_KAFKA_``; dashes and dots become underscores."""
    return f"{config.CORE_PREFIX}{name.upper().replace('-', '_').replace('.', '_')}_"


def create(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    variable: str = "LOGPIPE_EXPORTER",
) -> Exporter:
    """Load, configure and instantiate the exporter registered as *name*."""
    cls = load_class(name, variable=variable)
    options = config.load(cls.Options, options_prefix(name), overrides, environ)
    return cls(options)
