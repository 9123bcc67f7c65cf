"""What makes a file the same file across renames: its device and inode, checked by a CRC of its first bytes.

Rotation renames a file (same inode, new name) and creates a new one under
the old name (new inode), so files are followed by ``(st_dev, st_ino)``, not
by name. An inode number is reused once its file is deleted, and a file can
be rewritten while the tailer is stopped: the registry therefore also keeps a
CRC32 of the file's first bytes (up to `HEAD_BYTES`, as far as lines were
acknowledged), and a file whose beginning no longer matches is a new file.
"""

from __future__ import annotations

import os
import stat
import zlib

__all__ = ["HEAD_BYTES", "Head", "Key", "grown_head", "head_crc", "is_regular", "key_of", "same_head"]

#: ``(st_dev, st_ino)``: a file's identity while it exists.
Key = tuple[int, int]
#: ``(crc32, length)`` of a file's first bytes; ``(0, 0)`` when nothing is known yet.
Head = tuple[int, int]

#: Bytes of a file's beginning that the registry fingerprints (inode reuse, truncate-and-rewrite).
HEAD_BYTES = 1024


def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino)


def is_regular(st: os.stat_result) -> bool:
    """Only regular files are followed (not directories, FIFOs or devices a glob happens to match)."""
    return stat.S_ISREG(st.st_mode)


def head_crc(fd: int, length: int) -> int:
    """CRC32 of the first *length* bytes of the open file *fd*."""
    return zlib.crc32(os.pread(fd, length, 0))


def same_head(fd: int, head: Head) -> bool:
    """The file *fd* still begins with the bytes *head* was taken of (True when *head* is empty)."""
    crc, length = head
    return not length or head_crc(fd, length) == crc


def grown_head(fd: int, head: Head, committed: int) -> Head:
    """*head* extended to cover up to `HEAD_BYTES` of the *committed* (acknowledged) bytes of *fd*.

    Only acknowledged bytes are fingerprinted: they are what the registry's
    offset vouches for. Raises `OSError` when the file cannot be read.
    """
    if head[1] >= HEAD_BYTES or committed <= head[1]:
        return head
    length = min(HEAD_BYTES, committed)
    return (head_crc(fd, length), length)
