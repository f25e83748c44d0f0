"""One-line messages from pydantic validation errors (configs and protocols share them), safe to print."""
from __future__ import annotations

import re
from typing import Callable

from pydantic import ValidationError


def default_loc_text(loc) -> str:
    """pydantic ``loc`` tuple -> ``a.b[2].c``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def first_error_line(exc: ValidationError, loc_text: Callable = default_loc_text,
                     special: Callable[[dict, str], str] | None = None) -> str:
    """The first error of ``exc`` as ``where: what`` (no newline).

    Parameters
    ----------
    exc : pydantic.ValidationError
    loc_text : callable
        Turns an error's ``loc`` into the dotted key the user wrote.
    special : callable, optional
        ``special(err, msg) -> msg`` for error types a caller words itself.

    Examples
    --------
    >>> from pydantic import BaseModel
    >>> class M(BaseModel):
    ...     x: int
    >>> try:
    ...     M(x="a")
    ... except ValidationError as e:
    ...     print(first_error_line(e))
    x: Input should be a valid integer, unable to parse string as an integer
    """
    err = exc.errors()[0]
    loc = loc_text(err["loc"])
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required"
    elif kind == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    elif special is not None:
        msg = special(err, msg)
    return f"{loc}: {msg}" if loc else msg


#: C0 and C1 control characters and DEL (a terminal acts on them: colours, cursor moves, title changes ...)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, keep: str = "") -> str:
    """``text`` with control characters shown as escapes (``\\x1b``), so that printing it cannot drive the terminal.

    Parameters
    ----------
    text : str
    keep : str
        Control characters to leave as they are (e.g. ``"\\n"``).

    Examples
    --------
    >>> printable("ok\\x1b[32m LIMITS OK")
    'ok\\\\x1b[32m LIMITS OK'
    >>> printable("two\\nlines", keep="\\n")
    'two\\nlines'
    """
    return _CONTROL.sub(lambda m: m.group(0) if m.group(0) in keep else f"\\x{ord(m.group(0)):02x}", str(text))


def one_line(text: str) -> str:
    """Control characters escaped (:func:`printable`) and whitespace runs collapsed to one blank: one safe line.

    Examples
    --------
    >>> one_line("a\\n  b\\tc\\x07")
    'a b c\\\\x07'
    """
    return " ".join(printable(text, keep="\n\t\r\x0b\x0c").split())
