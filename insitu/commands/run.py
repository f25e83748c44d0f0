"""``insitu run``: run a bias protocol on instruments (or --mock) and record a session file."""
from __future__ import annotations

import sys

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


def _install_signal_handlers(engine):
    """SIGINT/SIGTERM ask the engine to stop (it ramps down); returns a function restoring the old handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    count = {"n": 0}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        count["n"] += 1
        engine.request_abort(name)
        if count["n"] == 1:
            print(f"\ninsitu run: {name}: stopping - ramping to 0 V and switching the output off, please wait",
                  file=sys.stderr, flush=True)
        else:
            print(f"\ninsitu run: {name} again: still ramping down to 0 V; the output must not be left on",
                  file=sys.stderr, flush=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def resume(signum, frame):      # on_seed: hold waits for the operator: `kill -USR1 <pid>` resumes
        engine.resume()

    if hasattr(signal, "SIGUSR1"):
        old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, resume)

    def restore():
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def _instrument_info(part, fallback: dict | None = None) -> dict:
    info = {}
    fn = getattr(part, "info", None)
    if callable(fn):
        try:
            info = dict(fn())
        except Exception:
            info = {}
    if not info:
        info = {"idn": str(getattr(part, "idn", type(part).__name__))}
    info.update(fallback or {})
    return info


def run(args) -> int:
    from pathlib import Path

    from insitu.core.clock import Clock
    from insitu.control.config import load_instruments, mock_toml, parse_instruments
    from insitu.control.engine import Engine
    from insitu.core.errors import StoppedEarly
    from insitu.instruments import open_instruments
    from insitu.control.protocol import load_protocol
    from insitu.core.session import SessionWriter
    from insitu.seedwatch import attach as attach_seed_watcher

    protocol = load_protocol(args.protocol)          # validated in full: exit 1 before anything is touched
    if args.frame_interval is not None and not args.mock:
        raise UserError("--frame-interval: only with --mock (a real frame source sets its own pace)")
    if args.time_scale is not None and not args.mock:
        raise UserError("--time-scale: only with --mock (real instruments run in real time)")
    time_scale = 1.0 if args.time_scale is None else float(args.time_scale)
    if not (time_scale > 0 and time_scale < 1e6):
        raise UserError(f"--time-scale: must be > 0 (got {args.time_scale!r})")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: file exists; refusing to overwrite it (use --overwrite)")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output folder does not exist")
    if args.mock:
        instruments_text = mock_toml(args.frame_interval or DEFAULT_FRAME_INTERVAL_S)
        config = parse_instruments(instruments_text, "mock instruments")
    else:
        config, instruments_text = load_instruments(args.config)

    clock = Clock(time_scale)
    instruments = open_instruments(config, clock, seed=args.seed)   # connecting changes no output
    status = "fault"
    try:
        writer = SessionWriter(out, overwrite=args.overwrite, start_time_iso=clock.start_iso,
                               protocol_text=protocol.text, instruments_text=instruments_text)
        from insitu.core.progress import status_stream

        engine = Engine(protocol, instruments, [writer], status_stream=status_stream(args.quiet))
        restore = _install_signal_handlers(engine)
        watcher = attach_seed_watcher(engine)       # until: {seeds}, on_seed: the detector in its own thread
        try:
            engine.run()
            status = "complete"
        except (StoppedEarly, UserError):
            status = "aborted"
            raise
        finally:
            restore()
            if watcher is not None:
                watcher.stop(timeout_s=5.0)
            try:
                fs = engine.found_state
                found = {} if fs is None else {"found_output_on": bool(fs.output_on), "found_level_V": fs.level_V,
                                               "found_current_limit_A": fs.current_limit_A}
                writer.set_instrument("source_meter", _instrument_info(instruments.source_meter, {
                    **found, "set_current_limit_A": protocol.limits.compliance_current,
                    "set_voltage_range_V": protocol.limits.max_voltage}))
                if instruments.blanker is not None:
                    writer.set_instrument("beam_blanker", _instrument_info(instruments.blanker))
                if instruments.frames is not None:
                    writer.set_instrument("frames", _instrument_info(instruments.frames))
                if instruments.specimen is not None:
                    instruments.specimen.write_truth(writer)
            except Exception as exc:  # metadata must not hide the run's outcome
                print(f"insitu run: warning: could not write instrument metadata: {exc}", file=sys.stderr)
            writer.close(status)
    finally:
        instruments.close()
    if writer.error is not None:  # the protocol ended, but the file could not take everything
        from insitu.core.session import RecordingFailed, _reason

        raise RecordingFailed(f"recording failed: {out}: {_reason(writer.error)}; the protocol itself ended "
                              f"{status} (output off at 0 V); the file's status is recording_failed")
    print(f"{out}: {status}; {count(engine.n_frames, 'frame')}, {engine.protocol_time:.0f} s of protocol, "
          f"dose {engine.dose:.4g} e/Å²")
    if engine.frames_note:
        print(f"  warning: {engine.frames_note}")
    return 0
