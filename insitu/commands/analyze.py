"""``insitu analyze``: drift-correct, difference, detect and track filament seeds, correlate, report."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Drift-correct, difference, detect and track filament seeds, correlate, report"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'analyze' is not implemented yet")
