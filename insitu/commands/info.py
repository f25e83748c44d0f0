"""``insitu info``: summarise a session file."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Summarise a session file"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'info' is not implemented yet")
