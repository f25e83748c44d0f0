"""Progress for long commands, on a terminal or in a log.

On a terminal a status line is rewritten in place (``"\\r" + text``). Piped
into a file or a CI log, the same updates become one plain line every
``period_s`` seconds (and the last one at the end), so a long ``run``,
``replay`` or ``analyze`` is never silent. ``--quiet`` silences it.
"""
from __future__ import annotations

import sys
import time
import weakref

#: seconds between progress lines when the stream is not a terminal
LINE_PERIOD_S = 10.0

#: status lines on a terminal whose last text is not yet ended by a newline
_open_lines: "weakref.WeakSet[StatusLine]" = weakref.WeakSet()


class StatusLine:
    """A stream for ``"\\r"``-status updates that also suits files and pipes.

    Parameters
    ----------
    stream : file-like, optional
        Where to write (default ``sys.stderr``).
    period_s : float
        Off a terminal: at most one line per ``period_s`` seconds of wall time.
    tty : bool, optional
        Force terminal (in-place) or line mode; default: ``stream.isatty()``.

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> s = StatusLine(buf, period_s=3600)
    >>> for k in range(3):
    ...     s.write(f"\\rstep {k}   ")
    >>> s.write("\\n")
    >>> buf.getvalue()
    'step 0\\nstep 2\\n'
    """

    def __init__(self, stream=None, period_s: float = LINE_PERIOD_S, tty: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.period_s = float(period_s)
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else bool(tty)
        self._pending = ""        # latest status not yet written (line mode)
        self._t_last = -float("inf")

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        if self.tty:
            self.stream.write(text)
            if text:
                if text.endswith("\n"):
                    _open_lines.discard(self)
                else:
                    _open_lines.add(self)
            return
        for i, part in enumerate(text.split("\n")):
            if i > 0:                                    # a newline: the status is final
                self._emit()
            status = part.rsplit("\r", 1)[-1].rstrip()
            if status:
                self._pending = status
                if time.monotonic() - self._t_last >= self.period_s:
                    self._emit()

    def _emit(self) -> None:
        if self._pending:
            self.stream.write(self._pending + "\n")
            self._pending = ""
            self._t_last = time.monotonic()

    def flush(self) -> None:
        try:
            self.stream.flush()
        except Exception:
            pass

    def close(self) -> None:
        """End the status: a newline on a terminal, the last pending line otherwise."""
        if self.tty:
            self.stream.write("\n")
            _open_lines.discard(self)
        else:
            self._emit()
        self.flush()

    def end_line(self) -> None:
        """On a terminal, end a status text left without a newline (so that a message printed next
        starts on its own line); a no-op otherwise."""
        if self.tty and self in _open_lines:
            _open_lines.discard(self)
            self.stream.write("\n")
            self.flush()


def end_status_lines() -> None:
    """End every terminal status line left open (before an error message is printed).

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> s = StatusLine(buf, tty=True)
    >>> s.write("\\r  frame 10 ")
    >>> end_status_lines()
    >>> buf.getvalue()
    '\\r  frame 10 \\n'
    """
    for line in list(_open_lines):
        line.end_line()


def status_stream(quiet: bool = False, stream=None) -> StatusLine | None:
    """The progress stream of a command: ``None`` with ``--quiet``, else a :class:`StatusLine`."""
    return None if quiet else StatusLine(stream)
