"""The exporter kit: everything a third-party exporter needs, importable from this one place.

A plugin author writes::

    from logpipe.exporters import ConfigError, Done, Exporter, ExportResult, NoOptions, PartialFailure, Pending
    from logpipe.exporters import Backoff, at_least, setting

and registers the class under the ``logpipe.exporters`` entry-point group
(see docs/plugins.md). The built-in exporters live in the submodules
(``logpipe.exporters.file``, ``.kafka``, ``.elasticsearch``, ``.spool``,
``.console``) and are registered the same way.
"""

from ..backoff import Backoff
from ..config import at_least, setting
from ..exceptions import ConfigError
from ..inflight import Done, Pending
from .base import Exporter, ExportResult, NoOptions, Outcome, PartialFailure

__all__ = [
    "Backoff",
    "ConfigError",
    "Done",
    "ExportResult",
    "Exporter",
    "NoOptions",
    "Outcome",
    "PartialFailure",
    "Pending",
    "at_least",
    "setting",
]
