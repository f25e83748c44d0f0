"""``insitu gui``: start the operator gui."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Start the operator GUI"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'gui' is not implemented yet")
