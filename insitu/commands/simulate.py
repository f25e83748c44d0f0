"""``insitu simulate``: run the resistor-network transport simulator on a microstructure file."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Run the resistor-network transport simulator on a microstructure file"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'simulate' is not implemented yet")
