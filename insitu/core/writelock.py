"""The advisory lock a session writer holds on its file for the whole run.

A session file whose writer is alive is locked; one whose writer died (``kill -9``,
a crash, a power cut on a network share that keeps locks) is not: the kernel drops
the lock with the process. So a reader knows the writer is dead from the lock, not
from how long ago the file changed, and a second writer (two runs with
``--overwrite`` on one path) is refused instead of truncating a live file.

The lock is an open-file-description lock (Linux ``F_OFD_SETLK``) on the whole
file: it belongs to the writer's own file descriptor, so HDF5 opening and
closing the file underneath (it uses ``flock``, a separate kind of lock) never
releases it, and it is seen from other descriptors in the same process too.
Where the platform has no such lock, :func:`writer_alive` answers ``None``
(unknown) and nothing is ever treated as dead.
"""
from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

from insitu.core.errors import UserError

try:
    import fcntl

    _SETLK = fcntl.F_OFD_SETLK
    _GETLK = fcntl.F_OFD_GETLK
except (ImportError, AttributeError):  # pragma: no cover - not Linux
    fcntl = None
    _SETLK = _GETLK = None

_FMT = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (+ padding to 32 bytes)


def _flock(kind: int) -> bytes:
    return struct.pack(_FMT, kind, os.SEEK_SET, 0, 0, 0)


class WriteLock:
    """Exclusive advisory lock on a whole file, held until :meth:`release`.

    Parameters
    ----------
    path : str or Path
        The file to lock. Created (empty) when ``create`` and it does not exist.
    create : bool
        Create a missing file.

    Raises
    ------
    UserError
        Another process (or another writer in this one) holds the lock.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> lock = WriteLock(p, create=True)
    >>> writer_alive(p)
    True
    >>> lock.release(); writer_alive(p)
    False
    """

    def __init__(self, path, *, create: bool = False):
        self.path = Path(path)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            self._fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot open for writing: {exc.strerror or exc}") from None
        if fcntl is None:  # pragma: no cover
            return
        try:
            fcntl.fcntl(self._fd, _SETLK, _flock(fcntl.F_WRLCK))
        except OSError as exc:
            os.close(self._fd)
            self._fd = -1
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"{self.path}: another insitu process is writing this file; "
                                "refusing to write it too") from None
            raise UserError(f"{self.path}: cannot lock the file: {exc.strerror or exc}") from None

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases its OFD lock
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def writer_alive(path) -> bool | None:
    """True when some process holds the writer's lock on ``path``, False when none does.

    None when it cannot be known (no lock support on this platform, or the file
    cannot be opened).
    """
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        got = fcntl.fcntl(fd, _GETLK, _flock(fcntl.F_WRLCK))
        return struct.unpack(_FMT, got)[0] != fcntl.F_UNLCK
    except OSError:
        return None
    finally:
        os.close(fd)


def try_lock(path) -> WriteLock | None:
    """The writer's lock on an existing file when nobody holds it, else None (never raises)."""
    try:
        return WriteLock(path)
    except UserError:
        return None


__all__ = ["WriteLock", "writer_alive", "try_lock"]
