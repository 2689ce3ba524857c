"""Files the SDK writes and reads: atomic writes (a crash leaves the old file or the new one,
never half) and reads of plain files only (no symlink, FIFO or device is followed)."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` (bytes, text, or a function writing to a binary file) to ``path``.

    The content goes to a temporary file in the same folder, is flushed to disk, and is
    renamed over ``path``; the temporary file is removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class NotRegularFile(OSError):
    """A path that must be a plain file is a symlink, a FIFO, a device or a folder, or is too big."""


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of ``path``, which must be a regular file (not a symlink) of at most ``limit`` bytes.

    The file is opened without following a final symlink and without blocking (a FIFO
    cannot hang the reader), and checked with ``fstat`` on the open descriptor, so what
    is checked is what is read. Raises :class:`NotRegularFile`, or the ``OSError`` of
    the open or the read (``FileNotFoundError`` when it is missing).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # pragma: no cover  (Windows)
        raise NotRegularFile(f"{path}: is a symlink")
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if os.path.islink(path):
            raise NotRegularFile(f"{path}: is a symlink") from e
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path}: is not a regular file")
        if st.st_size > limit:
            raise NotRegularFile(f"{path}: {st.st_size:,} bytes, over the {limit:,}-byte limit")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NotRegularFile(f"{path}: grew past the {limit:,}-byte limit while being read")
    return data
