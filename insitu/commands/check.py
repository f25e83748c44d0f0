"""``insitu check``: connect to the configured instruments and print their state as found (changes nothing)."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Connect to the configured instruments and print their state as found (changes nothing)"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'check' is not implemented yet")
