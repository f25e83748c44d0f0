"""The HDF5 superblock of a session file: write flags, end-of-file address, truncation.

Session files are written with ``libver="latest"`` (superblock version 3, at
offset 0). Its layout (HDF5 file format specification, "Superblock version 2
and 3"): signature (8 bytes), version, size of offsets, size of lengths, file
consistency flags, then four addresses (base, superblock extension,
end-of-file, root group object header) and a lookup3 checksum of all that.

HDF5 reading a file in SWMR mode skips its own "truncated file" check, and a
file cut short (``head -c 4096``, an interrupted copy) can then make it spin;
:func:`check_not_truncated` compares the file's size with the end-of-file
address first. A writer killed in SWMR mode leaves data *beyond* that address
(frames written since the last flush), never less, so a file shorter than its
end-of-file address has lost bytes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from insitu.core.errors import UserError

SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class Superblock:
    """Facts from a version 2/3 superblock (addresses in bytes)."""

    version: int
    flags: int          # file consistency flags: bit 0 open for writing, bit 2 SWMR writing
    eof_address: int    # end-of-file address: the file must be at least this long
    checksum_ok: bool


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on version 2/3 superblocks."""
    m = 0xFFFFFFFF
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & m
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & m
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & m
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & m
        a = (a - c) & m; a ^= _rot(c, 4); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= _rot(a, 6); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= _rot(b, 8); b = (b + a) & m  # noqa: E702
        a = (a - c) & m; a ^= _rot(c, 16); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= _rot(a, 19); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= _rot(b, 4); b = (b + a) & m  # noqa: E702
        i += 12
        n -= 12
    if n == 0:
        return c
    tail = data[i:i + n] + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - _rot(b, 14)) & m  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & m  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & m  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & m  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & m  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & m  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & m  # noqa: E702
    return c


def repair_session(path) -> bool:
    """Clear the "open for writing" flags a dead writer left in the superblock (what ``h5clear -s`` does).

    Only needed when a writer died in the few milliseconds while it had the
    file open outside SWMR mode (adding groups). The superblock checksum is
    verified before and rewritten after. Returns True when a flag was cleared.
    Never call it on a file that a live process is writing.
    """
    p = Path(path)
    with open(p, "r+b") as fh:
        head = fh.read(8 + 4)
        if head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] not in (2, 3):
            return False
        size_o = head[9]
        n = 12 + 4 * size_o
        fh.seek(0)
        block = fh.read(n + 4)
        if int.from_bytes(block[n:n + 4], "little") != _lookup3(block[:n]):
            raise UserError(f"{p}: superblock checksum does not match; not repairing")
        if block[11] == 0:
            return False
        fixed = block[:11] + b"\x00" + block[12:n]
        fh.seek(0)
        fh.write(fixed + _lookup3(fixed).to_bytes(4, "little"))
    return True


def read_superblock(path) -> Superblock | None:
    """The superblock of a version 2/3 HDF5 file at ``path``; None for other files (never raises on content)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12 + 4 * 8 + 4)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(head) < 12 or head[:8] != SIGNATURE or head[8] not in (2, 3):
        return None
    size_o = head[9]
    n = 12 + 4 * size_o
    if size_o not in (2, 4, 8) or len(head) < n + 4:
        return None
    eoa = int.from_bytes(head[12 + 2 * size_o:12 + 3 * size_o], "little")
    ok = int.from_bytes(head[n:n + 4], "little") == _lookup3(head[:n])
    return Superblock(head[8], head[11], eoa, ok)


def check_not_truncated(path) -> Superblock | None:
    """Raise UserError when ``path`` is shorter than its HDF5 end-of-file address (cut short).

    Returns the superblock (None for files that are not HDF5 version 2/3).
    """
    sb = read_superblock(path)
    if sb is None:
        return None
    if not sb.checksum_ok:
        raise UserError(f"{path}: damaged HDF5 file (superblock checksum does not match)")
    size = os.path.getsize(path)
    if size < sb.eof_address:
        raise UserError(f"{path}: truncated: {size} of its {sb.eof_address} bytes are there "
                        "(an interrupted copy?); nothing read from it")
    return sb


__all__ = ["Superblock", "read_superblock", "check_not_truncated", "repair_session"]
