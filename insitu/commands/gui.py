"""``insitu gui``: the operator window (live control and viewing, or replay of a session)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from insitu.control.config import DEFAULT_FRAME_INTERVAL_S
from insitu.core.errors import UserError

HELP = "Start the operator GUI (live control and viewing, or replay of a recorded session)"
DESCRIPTION = """\
Start the operator window: live image (raw / differential / registered, overlays),
bias and current plots, protocol progress with Start / Pause / Abort, beam state
and dose, event log.

  insitu gui --mock                          virtual specimen, the example protocol
  insitu gui --config instruments.toml --protocol p.yaml --out run.h5
  insitu gui --replay run.h5                 play a recorded session (no instrument touched)

--screenshot PNG --duration S runs for S seconds (with --mock it also starts the
protocol), saves a screenshot of the window, stops safely and exits 0.
"""

#: time scale of the mock clock (and replay speed) when --screenshot is given without --time-scale (--speed)
SCREENSHOT_TIME_SCALE = 30.0


def add_arguments(parser):
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--mock", action="store_true", help="mock instruments backed by the virtual specimen")
    src.add_argument("--config", metavar="FILE", help="instruments TOML (real instruments)")
    src.add_argument("--replay", metavar="SESSION", help="play a recorded session file at its own timing")
    parser.add_argument("--protocol", metavar="FILE",
                        help="protocol YAML (default with --mock: examples/ding2023.yaml)")
    parser.add_argument("--out", metavar="SESSION.h5",
                        help="session file to record (default: insitu-<date>-<time>.h5 in the current folder; "
                             "with --mock in the temp folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--speed", type=float, default=None, metavar="X",
                        help=f"replay speed (default 1; {SCREENSHOT_TIME_SCALE:g} with --screenshot)")
    parser.add_argument("--time-scale", type=float, default=None, metavar="X",
                        help="mock clock: experiment seconds per wall second "
                             f"(default 1; {SCREENSHOT_TIME_SCALE:g} with --screenshot)")
    parser.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window after --duration")
    parser.add_argument("--duration", type=float, metavar="S", help="run for S seconds, then stop safely and exit")
    parser.add_argument("--frame-interval", type=float, default=None, metavar="S",
                        help=f"--mock: seconds between frames (default {DEFAULT_FRAME_INTERVAL_S:g}, "
                             "as insitu run --mock and validate)")
    parser.add_argument("--view", choices=("raw", "differential", "registered"), default="raw",
                        help="initial image view (default raw)")
    parser.add_argument("--overlays", action="store_true",
                        help="start with the GB-network and electrode overlays on (mock or replay of a mock run)")
    parser.add_argument("--no-analysis", action="store_true", help="no live analysis (differential view, seeds)")
    parser.add_argument("--seed", type=int, default=0, help="virtual specimen seed (--mock)")


def default_protocol_path() -> Path:
    """``examples/ding2023.yaml`` of the source tree."""
    return Path(__file__).resolve().parents[2] / "examples" / "ding2023.yaml"


def _positive(name: str, v):
    if v is not None and not (0 < v < float("inf")):
        raise UserError(f"{name} must be a finite number > 0, got {v:g}")


def run(args) -> int:
    _positive("--duration", args.duration)
    _positive("--speed", args.speed)
    _positive("--time-scale", args.time_scale)
    _positive("--frame-interval", args.frame_interval)
    if args.frame_interval is not None and not args.mock:
        raise UserError("--frame-interval is only for --mock (real frame sources set their own rate)")
    if args.screenshot and args.duration is None:
        raise UserError("--screenshot needs --duration S (seconds to run before the screenshot)")
    if not (args.mock or args.config or args.replay):
        raise UserError("choose a source: --mock, --config FILE or --replay SESSION")
    if args.screenshot and not str(args.screenshot).lower().endswith(".png"):
        raise UserError(f"--screenshot {args.screenshot}: must be a .png file")
    if args.screenshot:
        from insitu.core.outputs import check_target

        check_target(args.screenshot, overwrite=True)  # its folder must exist: checked before the window opens

    # Qt aborts the process when its platform plugin cannot load: find out before any instrument is touched
    from insitu.gui.qt_platform import check_qt_platform

    check_qt_platform()

    from insitu.control.config import load_instruments, mock_toml, parse_instruments

    protocol = timeline = None
    protocol_path = ""
    if args.replay:
        backend, protocol, timeline = _replay_backend(args)
        protocol_path = f"recorded in {Path(args.replay).name}"
    else:
        if args.mock:
            config_text = mock_toml(args.frame_interval or DEFAULT_FRAME_INTERVAL_S)
            config = parse_instruments(config_text, "mock instruments")
        else:
            config, config_text = load_instruments(args.config)
        ppath = args.protocol or (str(default_protocol_path()) if args.mock else None)
        if ppath:
            protocol, timeline = _load_protocol(ppath, config.beam.probe_current_A, config.frames.rate_hz)
            protocol_path = str(ppath)
        name = f"insitu-{time.strftime('%Y%m%d-%H%M%S')}.h5"
        # real data go beside the operator; a mock run without --out goes to the temp folder
        out = args.out or (str(Path(tempfile.gettempdir()) / name) if args.mock else name)
        if Path(out).exists() and not args.overwrite:
            raise UserError(f"{out}: exists (use --overwrite to replace it)")
        if Path(out).parent and not Path(out).resolve().parent.is_dir():
            raise UserError(f"{out}: folder does not exist")
        scale = args.time_scale
        if scale is None:
            scale = SCREENSHOT_TIME_SCALE if (args.screenshot and args.mock) else 1.0
        if scale != 1.0 and not config.is_mock:
            raise UserError("--time-scale is only allowed with --mock")
        from insitu.gui.backends import EngineBackend

        backend = EngineBackend(config, config_text, protocol, out, overwrite=args.overwrite, time_scale=scale,
                                seed=args.seed)

    from insitu.gui.app import MainWindow, make_app, run_window

    app = make_app()  # keep a reference: the QApplication must outlive the window
    window = MainWindow(backend, protocol=protocol, timeline=timeline, protocol_path=protocol_path,
                        analysis=not args.no_analysis)
    window.image.set_mode(args.view.capitalize())
    if args.overlays:
        window.image.gb_box.setChecked(True)
        window.image.el_box.setChecked(True)
    # a timed run starts by itself (mock: the example protocol; replay: playback)
    autostart = args.duration is not None and (args.mock or args.replay) and (args.replay or protocol is not None)
    return run_window(window, autostart=bool(autostart), screenshot=args.screenshot, duration_s=args.duration)


def _load_protocol(path, probe_current_A, frame_rate_hz=1.0):
    from insitu.control.protocol import expand, load_protocol

    if not Path(path).is_file():
        raise UserError(f"{path}: protocol file not found")
    protocol = load_protocol(path)
    return protocol, expand(protocol, probe_current_A, frame_rate_hz=frame_rate_hz)


def _replay_backend(args):
    from insitu.gui.backends import ReplayBackend

    path = Path(args.replay)
    if not path.is_file():
        raise UserError(f"{path}: session file not found")
    import numpy as np

    from insitu.core.session import open_session

    with open_session(path) as s:  # UserError on a file that is not a session
        text = s.protocol_text or ""
        t = s.bias.get("time", ())
        duration = float(t[-1]) if len(t) else float("nan")
        ft = np.asarray(s.frame_table.get("time", ()), float)
        # the recorded frame rate, for the planned length of acquire steps
        frame_rate = 1.0 / float(np.median(np.diff(ft))) if ft.size >= 3 and np.median(np.diff(ft)) > 0 else 1.0
    protocol = timeline = None
    if text.strip():
        try:  # the timeline is a convenience: replay works without it
            from insitu.control.protocol import expand, parse_protocol

            protocol = parse_protocol(text, f"{path}:/entry/protocol")
            timeline = expand(protocol, frame_rate_hz=frame_rate)
        except Exception:
            protocol = timeline = None
    speed = args.speed if args.speed is not None else (SCREENSHOT_TIME_SCALE if args.screenshot else 1.0)
    backend = ReplayBackend(path, speed=speed)
    backend.duration_s = duration
    return backend, protocol, timeline
