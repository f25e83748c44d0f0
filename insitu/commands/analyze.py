"""``insitu analyze``: drift-correct, difference, detect and track filament seeds, correlate, report."""
from __future__ import annotations

from insitu.core.errors import UserError
from insitu.core.units import count

HELP = "Drift-correct, difference, detect and track filament seeds, correlate, report"
DESCRIPTION = """\
Analyse a session file or a folder of frames (TIFF / Velox .emd / DM .dm3 .dm4,
sorted by name; an optional frames.csv with columns index,time_s gives the times).

Writes to DIR (under a temporary name, renamed when complete; an existing DIR
is refused, or replaced as a whole with --overwrite; after an error what was
done is kept in DIR.incomplete): drift.csv (frame, dx_px, dy_px), differential.h5 (differential
images in units of the local noise σ), seeds.csv (id, first_frame, first_time_s,
x_px, y_px, sign, area_px, peak_snr, last_frame; x, y in first-frame pixels),
report.html, summary.json; with --microstructure and --simulation also
correlation.csv, gb_statistics.csv and statistics.json (the GB-level test: do
seed-carrying GBs have a larger simulated current jump than GBs equally connected
to, and as far from, the negative electrode? AUC and exact p; interface seeds
counted apart).

examples:
  insitu analyze session.h5 --out analysis/
  insitu analyze frames/ --out analysis/ --threshold 5
  insitu analyze session.h5 --out analysis/ --microstructure micro.h5 --simulation sim/
  insitu analyze session.h5 --out analysis/ --live
"""


def add_arguments(parser):
    parser.add_argument("input", metavar="SESSION_OR_FOLDER", help="session file, folder of frames or one image file")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created; written complete or not at all)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR as a whole")
    parser.add_argument("--microstructure", metavar="MICRO.h5", help="microstructure for the correlation")
    parser.add_argument("--simulation", metavar="SIMDIR", help="folder written by 'insitu simulate'")
    parser.add_argument("--map-transform", metavar="S,ROT,DX,DY",
                        help="microstructure px -> frame px: scale, rotation (deg), offset x, offset y (px)")
    parser.add_argument("--live", action="store_true",
                        help="follow a session while it is being recorded, until it is closed")
    parser.add_argument("--threshold", type=float, default=6.0, metavar="SIGMA",
                        help="detection level of the accumulated evidence of change, in σ (default 6)")
    parser.add_argument("--persistence", type=int, default=2, metavar="N",
                        help="frames a change must be seen in to count as a seed (default 2)")
    parser.add_argument("--sigma-px", type=float, default=1.5, metavar="PX",
                        help="smoothing of the differential image, px (default 1.5: seeds from ~2 px radius)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


#: room kept for the report, summary and CSV files beside the differential images (bytes)
REPORT_BYTES = 4 << 20


def _bytes_needed(input_path) -> int:
    """A generous estimate of what the analysis writes: the differential images (float16, one per
    frame) plus the report; checked before starting, as HDF5 meeting a full disk cannot recover."""
    from pathlib import Path

    import numpy as np

    from insitu.core.readers import is_image_file
    from insitu.core.session import is_session_file, open_session

    p = Path(input_path)
    if p.is_file() and is_session_file(p):
        with open_session(p) as s:
            return REPORT_BYTES + 2 * s.n_frames * int(np.prod(s.frame_shape or (0,)))
    if p.is_dir():
        return REPORT_BYTES + sum(f.stat().st_size for f in p.iterdir() if is_image_file(f))
    return REPORT_BYTES + (p.stat().st_size if p.is_file() else 0)


def check_options(args):
    """Check the detection options (one-line UserError); returns the --map-transform (or None).

    Shared with ``insitu batch analyze``, which passes the same options to every session.
    """
    from insitu.analysis.correlate import parse_map_transform

    if args.persistence < 1:
        raise UserError(f"--persistence {args.persistence}: must be at least 1")
    if not args.threshold > 0:
        raise UserError(f"--threshold {args.threshold}: must be > 0")
    if not args.sigma_px >= 0:
        raise UserError(f"--sigma-px {args.sigma_px}: must be >= 0")
    return parse_map_transform(args.map_transform) if args.map_transform else None


def run(args) -> int:
    from insitu.analysis.pipeline import analyze
    from insitu.core.progress import status_stream

    tr = check_options(args)
    status = status_stream(args.quiet)

    def progress(done, total):
        if status is not None and (done % 10 == 0 or done == total):
            status.write(f"\r  frame {done}" + (f"/{total}" if total else "") + " ")
            status.flush()

    from pathlib import Path

    from insitu.core.outputs import check_space, check_target, output_dir

    out = Path(args.out)
    check_target(out, args.overwrite, folder=True)
    check_space(out.parent if str(out.parent) else ".", _bytes_needed(args.input))
    with output_dir(out, args.overwrite, keep_partial=True) as tmp:  # renamed to DIR when complete, replacing an old set whole
        paths = analyze(args.input, tmp, microstructure=args.microstructure, simulation=args.simulation,
                        progress=progress, live=args.live, map_transform=tr, threshold=args.threshold,
                        persistence=args.persistence, sigma_px=args.sigma_px)
    paths = {k: out / Path(p).relative_to(tmp) if isinstance(p, (str, Path)) else p for k, p in paths.items()}
    if status is not None:
        status.close()
    import json

    summary = json.loads(paths["summary"].read_text())
    print(f"{count(summary['n_frames'], 'frame')}, {count(summary['n_seeds'], 'seed')} -> {args.out}")
    for note in summary.get("notes", []):
        print(f"  {note}")
    st = summary.get("statistics")
    if st:
        from insitu.analysis.correlate import stats_line

        print(f"  {stats_line(st)}")
    print(f"  report: {paths['report']}")
    return 0
