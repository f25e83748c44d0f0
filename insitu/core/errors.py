"""Exceptions and the exit-code convention shared by every CLI verb.

=====  ==========================================================
code   meaning
=====  ==========================================================
0      ok
1      user error: bad file, bad value, invalid protocol or config
2      instrument fault (the output has been switched off, or the
       message says loudly that it could not be)
3      stopped early by a safety suspender or by the operator
=====  ==========================================================
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_USER = 1
EXIT_INSTRUMENT = 2
EXIT_STOPPED = 3


class InsituError(Exception):
    """Base class. ``exit_code`` says how the CLI ends when it escapes."""

    exit_code = EXIT_USER


class UserError(InsituError):
    """Bad input from the user: a file, a value, a protocol, a config."""

    exit_code = EXIT_USER


class InstrumentError(InsituError):
    """An instrument misbehaved: bad reply, error queue entry, timeout."""

    exit_code = EXIT_INSTRUMENT


class ConnectionLost(InstrumentError):
    """The transport to an instrument failed (socket closed, VISA I/O error)."""


class StoppedEarly(InsituError):
    """A suspender (short, compliance, stall, beam) or the operator stopped the run."""

    exit_code = EXIT_STOPPED
