"""Built-in exporters. Each is also registered as a ``logpipe.exporters`` entry point."""

from .base import Exporter, ExportResult, NoOptions, PartialFailure

__all__ = ["ExportResult", "Exporter", "NoOptions", "PartialFailure"]
