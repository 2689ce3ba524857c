"""Files the SDK writes and reads: atomic writes (a crash leaves the old file or the new one,
never half) and reads of plain files only (no symlink, FIFO or device is followed)."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None], mode: int = 0o644) -> Path:
    """Write ``data`` (bytes, text, or a function writing to a binary file) to ``path``.

    The content goes to a temporary file in the same folder, is flushed to disk, and is
    renamed over ``path``; the temporary file is removed if anything fails. The file gets
    ``mode`` (0o644: readable by all, as an ordinary file; a temporary file alone would be
    private, 0o600); pass 0o600 for secrets.
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
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_or_raise(read: Callable[[], bytes], where: object, what: str, error: type[Exception]) -> bytes:
    """``read()``, with its failures turned into one ``error`` (a typed SDK error) that says
    what ``what`` at ``where`` is: missing, refused (not a regular file, too big) or unreadable."""
    try:
        return read()
    except FileNotFoundError:
        raise error(f"{where}: {what} is missing") from None
    except NotRegularFile as e:
        raise error(f"refusing the {what}: {e}") from None
    except OSError as e:
        raise error(f"{where}: unreadable {what} ({e.strerror or e})") from None


class NotRegularFile(OSError):
    """A path that must be a plain file is a symlink, a FIFO, a device or a folder, or is too big."""


def read_regular(path: str | os.PathLike, limit: int, dir_fd: int | None = None) -> bytes:
    """The bytes of ``path``, which must be a regular file (not a symlink) of at most ``limit`` bytes.

    With ``dir_fd`` (an open folder), ``path`` is a name inside that folder: a reader
    holding the folder open keeps reading the same folder even if another one is renamed
    into its place.

    The file is opened without following a final symlink and without blocking (a FIFO
    cannot hang the reader), and checked with ``fstat`` on the open descriptor, so what
    is checked is what is read. Raises :class:`NotRegularFile`, or the ``OSError`` of
    the open or the read (``FileNotFoundError`` when it is missing).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # pragma: no cover  (Windows)
        raise NotRegularFile(f"{path}: is a symlink")
    try:
        fd = os.open(path, flags) if dir_fd is None else os.open(path, flags, dir_fd=dir_fd)
    except OSError as e:
        if os.path.islink(path) if dir_fd is None else _is_link_at(path, dir_fd):
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


def _is_link_at(name: str | os.PathLike, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(path: str | os.PathLike) -> int | None:
    """A read-only descriptor of folder ``path`` for :func:`read_regular`'s ``dir_fd`` (None where
    the platform cannot read relative to a folder). The caller closes it."""
    if os.open not in os.supports_dir_fd or not hasattr(os, "O_DIRECTORY"):  # pragma: no cover
        return None
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the names ``a`` and ``b`` (two folders) in one atomic step, so ``b`` never stops
    existing; True when done, False where the system cannot (not Linux, an old kernel or
    file system): the caller then falls back to two renames."""
    import ctypes
    import errno

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover  (not glibc/bionic)
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (renames into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover  (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover  (some file systems refuse)
        pass
    finally:
        os.close(fd)
