"""``insitu replay``: replay a recorded session through the pipeline at its recorded timing."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Replay a recorded session through the pipeline at its recorded timing"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'replay' is not implemented yet")
