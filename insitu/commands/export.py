"""``insitu export``: export a session's frames to hyperspy (.hspy/.zspy) or tiff."""
from __future__ import annotations

HELP = "Export a session's frames to HyperSpy (.hspy/.zspy) or TIFF"
DESCRIPTION = """\
Export a session's frames as a calibrated HyperSpy Signal2D stack: pixel size
in nm, the time axis non-uniform where the frame times are, and bias, current
and time per frame in metadata.Insitu.frames. TIFF keeps the pixel size; the
per-frame table goes to OUT.frames.csv beside it.

examples:
  insitu export run.h5 --to hspy --out run.hspy
  insitu export run.h5 --to tiff --out run.tif
"""


def add_arguments(parser):
    parser.add_argument("session", help="session file (.h5)")
    parser.add_argument("--to", required=True, choices=["hspy", "zspy", "tiff"], help="output format")
    parser.add_argument("--out", required=True, help="output file (the suffix is added when missing)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output")


def run(args) -> int:
    import warnings

    from insitu.core.export import export_session

    warnings.filterwarnings("ignore", category=FutureWarning)  # zarr 2 deprecation notes on every zspy save
    written = export_session(args.session, args.to, args.out, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
