"""Exceptions logpipe raises to its callers."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A setting is unknown or invalid.

    Raised at configure time, never from a log call. The message names the
    environment variable (or argument) at fault so it can be fixed without
    reading logpipe's source.
    """
