"""Which files to follow: the glob patterns matched now, as identities and absolute paths.

Vector's ``paths_provider``. The patterns are matched again every
``scan_interval``, so files that appear later (a new day's file, the new file
after a rotation) are found. The tailer's own files (registry, dead letters,
the registry's temp file) are never followed, even when a pattern matches.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Collection, Iterable

from .fingerprint import Key, is_regular, key_of

__all__ = ["scan"]


def scan(patterns: Iterable[str], exclude: Collection[str] = ()) -> dict[Key, str]:
    """Regular files matching *patterns* (``~`` expanded), identity -> absolute path; *exclude* holds absolute paths.

    A file matched under two names (a hard link, overlapping patterns) is
    listed once, under the first name in pattern order, then sorted order.
    """
    seen: dict[Key, str] = {}
    for pattern in patterns:
        for name in sorted(glob.glob(os.path.expanduser(pattern))):
            path = os.path.abspath(name)
            if path in exclude or path.endswith(".tmp") and path[:-4] in exclude:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if is_regular(st):
                seen.setdefault(key_of(st), path)
    return seen
