"""Atomic outputs and the one ``--overwrite`` rule of every verb that writes.

The rule: an output that exists is refused unless ``--overwrite`` is given; with
it the whole output is replaced (a folder as a set: no old ``correlation.csv``
beside new results). Outputs are written under a hidden temporary name in the
same folder (``.NAME.partial-XXXX``) and renamed to their final name only when
complete, so a failed or killed command leaves nothing that looks finished.
A write that fails (disk full, I/O error) is one line, exit 1.

Example
-------
>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> with output_file(os.path.join(d, "a.csv")) as tmp:
...     _ = tmp.write_text("x\\n1\\n")
>>> sorted(os.listdir(d))
['a.csv']
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from insitu.core.errors import UserError

PARTIAL = ".partial-"
INCOMPLETE = ".incomplete"


def check_target(path, overwrite: bool, *, folder: bool = False) -> Path:
    """Refuse an existing output without ``overwrite``; the parent folder must exist.

    An existing *empty* folder is not an output yet and is accepted for a folder target.
    """
    p = Path(path)
    if p.exists() or p.is_symlink():
        if folder and p.is_dir() and not any(p.iterdir()):
            pass
        elif not overwrite:
            what = "folder" if p.is_dir() else "file"
            raise UserError(f"{p}: {what} exists; refusing to overwrite it (use --overwrite to replace it"
                            + (" as a whole)" if p.is_dir() else ")"))
        elif folder != p.is_dir():
            raise UserError(f"{p}: exists and is a {'file' if folder else 'folder'}; "
                            f"expected a {'folder' if folder else 'file'}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{parent}: output folder does not exist")
    return p


def write_error(path, exc: BaseException) -> UserError:
    """A one-line UserError for a failed write of ``path`` (disk full, permission, I/O)."""
    text = str(exc).strip()
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else "")
    if "errno = 28" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        reason = os.strerror(errno.ENOSPC)
    return UserError(f"{path}: cannot write: {reason or type(exc).__name__}; nothing was left at that name")


def check_space(path, need_bytes: int, reserve_bytes: int = 1 << 20) -> None:
    """UserError when the disk of ``path`` has less than ``need_bytes`` + ``reserve_bytes`` free
    (checked before writing: HDF5 meeting a full disk cannot close its file cleanly)."""
    p = Path(path)
    folder = p if p.is_dir() else (p.parent if str(p.parent) else Path("."))
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # pragma: no cover - no statvfs: the write itself reports it
        return
    free = st.f_bavail * st.f_frsize
    if free < need_bytes + reserve_bytes:
        raise UserError(f"{p}: cannot write: {os.strerror(errno.ENOSPC)} ({free / 1e6:.1f} MB free, "
                        f"{(need_bytes + reserve_bytes) / 1e6:.1f} MB needed); nothing was written")


_AFTER_HDF5_FAILURE: dict = {}


def hdf5_failed(exc: BaseException | None, exit_code: int = 1, *, force: bool = False) -> None:
    """After HDF5 met a failed write (``exc`` raised inside h5py, or ``force``) its library state
    cannot close files cleanly and the interpreter's own clean-up would crash (SIGSEGV): end the
    process with ``exit_code`` (the latest call wins) without that clean-up, after the command has
    returned and the streams are flushed."""
    import atexit
    import traceback

    if _AFTER_HDF5_FAILURE:  # already armed: the latest caller says how the process ends
        _AFTER_HDF5_FAILURE["code"] = int(exit_code)
        return
    tb = exc.__traceback__ if exc is not None else None
    if not force and not any("h5py" in (fr.filename or "") for fr in traceback.extract_tb(tb)):
        return
    _AFTER_HDF5_FAILURE["code"] = int(exit_code)

    def leave():
        import sys

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(_AFTER_HDF5_FAILURE["code"])

    atexit.register(leave)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _temp_name(p: Path, folder: bool) -> Path:
    parent = p.parent if str(p.parent) else Path(".")
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{p.name}{PARTIAL}", suffix=p.suffix, dir=parent))
    fd, name = tempfile.mkstemp(prefix=f".{p.name}{PARTIAL}", suffix=p.suffix, dir=parent)
    os.close(fd)
    os.unlink(name)  # writers create it themselves (h5py, HyperSpy, numpy refuse or truncate an existing one)
    return Path(name)


def _commit(tmp: Path, p: Path) -> None:
    """Rename ``tmp`` to ``p``, replacing whatever is there as a whole."""
    if p.is_dir() and not p.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-", dir=p.parent))
        os.rmdir(old)
        os.rename(p, old)
        try:
            os.rename(tmp, p)
        except OSError:
            os.rename(old, p)  # put the old set back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, p)


def _keep_partial(tmp: Path, p: Path) -> Path | None:
    """Move a failed run's partial folder to ``NAME.incomplete`` (replacing an older one); None if empty."""
    if not tmp.is_dir() or not any(tmp.iterdir()):
        return None
    inc = p.with_name(p.name + INCOMPLETE)
    try:
        if inc.exists():
            _remove(inc)
        os.rename(tmp, inc)
    except OSError:
        return None
    return inc


@contextlib.contextmanager
def _atomic(path, overwrite: bool, folder: bool, keep_partial: bool = False) -> Iterator[Path]:
    p = check_target(path, overwrite, folder=folder)
    try:
        tmp = _temp_name(p, folder)
    except OSError as exc:
        raise write_error(p, exc) from None
    try:
        yield tmp
        if not folder and not tmp.exists():
            raise UserError(f"{p}: nothing was written")
        _commit(tmp, p)
    except BaseException as exc:
        inc = _keep_partial(tmp, p) if keep_partial and not isinstance(exc, OSError) else None
        _remove(tmp)
        if inc is not None and isinstance(exc, UserError):
            raise UserError(f"{exc} (what was done before is in {inc})") from None
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "write failed" in str(exc)):
            hdf5_failed(exc, 1)
            raise write_error(p, exc) from None
        raise


def output_file(path, overwrite: bool = False):
    """Context manager: a temporary path beside ``path`` to write; renamed to ``path`` on success.

    Raises UserError when ``path`` exists and not ``overwrite``, and turns a failed
    write (OSError) into a one-line UserError; the temporary file is removed on any error.
    """
    return _atomic(path, overwrite, folder=False)


def output_dir(path, overwrite: bool = False, keep_partial: bool = False):
    """Context manager: a temporary folder beside ``path`` to fill; it replaces ``path`` as a whole
    on success (an existing non-empty folder only with ``overwrite``); removed on any error, or with
    ``keep_partial`` moved to ``NAME.incomplete`` (a name that does not look finished) and named in
    the error."""
    return _atomic(path, overwrite, folder=True, keep_partial=keep_partial)


__all__ = ["check_target", "check_space", "output_file", "output_dir", "write_error", "hdf5_failed"]
