"""``insitu import``: import microscope files (velox emd, dm3/dm4, tiff) and a bias log into a session file."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Import microscope files (Velox EMD, DM3/DM4, TIFF) and a bias log into a session file"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'import' is not implemented yet")
