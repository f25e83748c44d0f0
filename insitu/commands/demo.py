"""``insitu demo``: run the virtual-specimen experiment end to end: run, simulate, analyse, report."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Run the virtual-specimen experiment end to end: run, simulate, analyse, report"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'demo' is not implemented yet")
