"""``insitu validate``: validate a protocol and print its expanded timeline (touches no hardware)."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Validate a protocol and print its expanded timeline (touches no hardware)"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'validate' is not implemented yet")
