"""``insitu run``: run a bias protocol on instruments (or --mock) and record a session file."""
from __future__ import annotations

from insitu.control.config import DEFAULT_FRAME_INTERVAL_S
from insitu.core.errors import UserError
from insitu.core.units import count

HELP = "Run a bias protocol on instruments (or --mock) and record a session file"
DESCRIPTION = """\
Run a bias protocol (YAML) on the source-meter, beam blanker and frame source
named in an instruments TOML (or on simulated instruments with --mock) and
record everything in a crash-safe session file (HDF5).

Safety: the whole protocol is checked against its limits before anything is
switched on; a source found on is ramped down first; the current limit is set
and read back before the output goes on at 0 V; every exit (end, error,
Ctrl-C, SIGTERM, suspender) ends at 0 V with the output off.

Exit codes: 0 complete, 1 bad input (nothing switched on), 2 instrument fault
(output off, or the message says loudly why not), 3 stopped early by a
suspender or the operator.

examples:
  insitu run examples/ding2023.yaml --mock --time-scale 200 --out demo.h5
  insitu run protocol.yaml --config examples/keithley2450.toml --out run1.h5
"""


def add_arguments(parser):
    parser.add_argument("protocol", metavar="PROTOCOL", help="protocol YAML file")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--mock", action="store_true", help="simulated instruments (virtual specimen)")
    src.add_argument("--config", metavar="FILE", help="instruments TOML file")
    parser.add_argument("--out", required=True, metavar="SESSION.h5", help="session file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing session file")
    parser.add_argument("--time-scale", type=float, default=None, metavar="X",
                        help="run the clock X times faster than real time (only with --mock)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulated instruments (--mock)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--frame-interval", type=float, default=None, metavar="S",
                        help=f"--mock: seconds between frames (default {DEFAULT_FRAME_INTERVAL_S:g}, "
                             "as insitu validate assumes)")


def run(args) -> int:
    from insitu.control.config import load_instruments, mock_toml, parse_instruments
    from insitu.control.protocol import load_protocol
    from insitu.core.progress import status_stream
    from insitu.runner import ProtocolRunner

    protocol = load_protocol(args.protocol)          # validated in full: exit 1 before anything is touched
    if args.frame_interval is not None and not args.mock:
        raise UserError("--frame-interval: only with --mock (a real frame source sets its own pace)")
    if args.time_scale is not None and not args.mock:
        raise UserError("--time-scale: only with --mock (real instruments run in real time)")
    fi = args.frame_interval
    if fi is not None and not (0 < fi < float("inf")):
        raise UserError(f"--frame-interval: must be a positive number of seconds (got {fi!r})")
    if args.mock:
        instruments_text = mock_toml(fi or DEFAULT_FRAME_INTERVAL_S)
        config = parse_instruments(instruments_text, "mock instruments")
    else:
        config, instruments_text = load_instruments(args.config)
    runner = ProtocolRunner(protocol, config, instruments_text, args.out, overwrite=args.overwrite,
                            time_scale=1.0 if args.time_scale is None else float(args.time_scale),
                            seed=args.seed, program="insitu run", status_stream=status_stream(args.quiet))
    runner.run()      # raises (exit 1/2/3) after the output is off at 0 V and the file is closed
    engine = runner.engine
    print(f"{runner.out}: {runner.status}; {count(engine.n_frames, 'frame')}, {engine.protocol_time:.0f} s of "
          f"protocol, dose {engine.dose:.4g} e/Å²")
    if engine.frames_note:
        print(f"  warning: {engine.frames_note}")
    return 0
