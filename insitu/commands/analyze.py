"""``insitu analyze``: drift-correct, difference, detect and track filament seeds, correlate, report."""
from __future__ import annotations

from insitu.errors import UserError

HELP = "Drift-correct, difference, detect and track filament seeds, correlate, report"
DESCRIPTION = """\
Analyse a session file or a folder of frames (TIFF / Velox .emd / DM .dm3 .dm4,
sorted by name; an optional frames.csv with columns index,time_s gives the times).

Writes to DIR: drift.csv (frame, dx_px, dy_px), differential.h5 (differential
images in units of the local noise σ), seeds.csv (id, first_frame, first_time_s,
x_px, y_px, sign, area_px, peak_snr, last_frame; x, y in first-frame pixels),
report.html, summary.json; with --microstructure and --simulation also
correlation.csv and statistics.json (ROC AUC of seed GB jumps against GB points
at the same distance from the negative electrode, permutation p-value).

examples:
  insitu analyze session.h5 --out analysis/
  insitu analyze frames/ --out analysis/ --threshold 5
  insitu analyze session.h5 --out analysis/ --microstructure micro.h5 --simulation sim/
  insitu analyze session.h5 --out analysis/ --live
"""


def add_arguments(parser):
    parser.add_argument("input", metavar="SESSION_OR_FOLDER", help="session file, folder of frames or one image file")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--microstructure", metavar="MICRO.h5", help="microstructure for the correlation")
    parser.add_argument("--simulation", metavar="SIMDIR", help="folder written by 'insitu simulate'")
    parser.add_argument("--map-transform", metavar="S,ROT,DX,DY",
                        help="microstructure px -> frame px: scale, rotation (deg), offset x, offset y (px)")
    parser.add_argument("--live", action="store_true",
                        help="follow a session while it is being recorded, until it is closed")
    parser.add_argument("--threshold", type=float, default=4.5, metavar="SIGMA",
                        help="detection level in the differential image, in σ (default 4.5)")
    parser.add_argument("--persistence", type=int, default=2, metavar="N",
                        help="frames a change must be seen in to count as a seed (default 2)")
    parser.add_argument("--sigma-px", type=float, default=1.5, metavar="PX",
                        help="smoothing of the differential image, px (default 1.5: seeds from ~2 px radius)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


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
    import sys

    from insitu.analysis.pipeline import analyze

    tr = check_options(args)
    show = not args.quiet and sys.stderr.isatty()

    def progress(done, total):
        if show and (done % 10 == 0 or done == total):
            sys.stderr.write(f"\r  frame {done}" + (f"/{total}" if total else "") + " ")
            sys.stderr.flush()

    paths = analyze(args.input, args.out, microstructure=args.microstructure, simulation=args.simulation,
                    progress=progress, live=args.live, map_transform=tr, threshold=args.threshold,
                    persistence=args.persistence, sigma_px=args.sigma_px)
    if show:
        sys.stderr.write("\n")
    import json

    summary = json.loads(paths["summary"].read_text())
    print(f"{summary['n_frames']} frames, {summary['n_seeds']} seeds -> {args.out}")
    for note in summary.get("notes", []):
        print(f"  {note}")
    st = summary.get("statistics")
    if st:
        print(f"  seed GB jumps vs distance-matched GB points: AUC {st['auc']:.3f}, p = {st['p_value']:.3g} "
              f"({st['seeds_on_gb']} of {st['seeds_total']} seeds on a GB)")
    print(f"  report: {paths['report']}")
    return 0
