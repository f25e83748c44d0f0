"""``insitu run``: run a bias protocol on instruments (or --mock) and record a session file."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Run a bias protocol on instruments (or --mock) and record a session file"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'run' is not implemented yet")
