"""``insitu microstructure``: build a microstructure file from an orientation map (.ang/.ctf) or label image."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Build a microstructure file from an orientation map (.ang/.ctf) or label image"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'microstructure' is not implemented yet")
