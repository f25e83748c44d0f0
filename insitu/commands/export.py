"""``insitu export``: export a session's frames to hyperspy (.hspy/.zspy) or tiff."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Export a session's frames to HyperSpy (.hspy/.zspy) or TIFF"


def add_arguments(parser):
    pass


def run(args) -> int:
    raise UserError("'export' is not implemented yet")
