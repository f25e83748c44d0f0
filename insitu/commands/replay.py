"""``insitu replay``: replay a recorded session through the pipeline at its recorded timing."""
from __future__ import annotations

import sys
from insitu.core.units import count

HELP = "Replay a recorded session through the pipeline at its recorded timing"
DESCRIPTION = """\
Feed a recorded session through the same pipeline as a live run (session
recorder, live analysis, GUI) at X times its recorded timing. No instrument is
touched.

examples:
  insitu replay run.h5 --speed 10 --out copy.h5      frames in copy.h5 equal the originals
  insitu replay run.h5 --speed 20 --analyze seeds/   live analysis -> seeds/seeds.csv
  insitu replay run.h5 --gui                         the operator window (insitu gui --replay)
  insitu replay run.h5 --triggers                    closed loop: the recorded frames through the seed
                                                     detector and the protocol's until:/on_seed: rules;
                                                     prints each trigger beside the recorded one
"""


def add_arguments(parser):
    parser.add_argument("session", help="session file (.h5)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="X", help="replay speed (default 1)")
    parser.add_argument("--out", metavar="NEW.h5", help="record the replayed stream into a new session file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--analyze", metavar="DIR", help="run the live analysis; write DIR/seeds.csv at the end")
    parser.add_argument("--gui", action="store_true", help="show the replay in the operator window")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--triggers", action="store_true",
                        help="closed loop: fire the protocol's until:/on_seed: rules on the replayed frames and "
                             "readings (as fast as possible) and compare with the triggers the run recorded")


class _Progress:
    """One status line (frames, time, V, I): in place on a terminal, a line every few seconds in a log."""

    def __init__(self, runner, stream):
        self.runner = runner
        self.stream = stream
        self.v = self.i = float("nan")
        self.frames = 0

    def __call__(self, rec):
        from insitu.core.records import BiasSample, FrameRecord

        if isinstance(rec, BiasSample):
            self.v, self.i = rec.voltage_V, rec.current_A
        elif isinstance(rec, FrameRecord):
            self.frames += 1
            p = self.runner.player
            self.stream.write(f"\rreplay {rec.time_s - p.t_first:8.1f}/{p.duration_s:.1f} s  frame "
                              f"{self.frames}/{p.session.n_frames}  V {self.v:+8.3f} V  I {self.i:+.3e} A ")
            self.stream.flush()


def _check_triggers(session_path) -> int:
    """``--triggers``: replayed triggers against recorded ones, one line each; 0 when they agree."""
    from insitu.control.rules import parse_trigger
    from insitu.core.session import open_session
    from insitu.seedwatch import replay_triggers

    with open_session(session_path) as s:
        recorded = [parse_trigger(m) for _, k, m in s.events if k == "trigger"]
    seeds, replayed = replay_triggers(session_path)
    n = max(len(recorded), len(replayed))
    for k in range(n):
        a = recorded[k].message() if k < len(recorded) else "-"
        b = replayed[k].message() if k < len(replayed) else "-"
        print(f"{'same' if a == b else 'DIFFERS'}: recorded {a} | replayed {b}")
    same = recorded == replayed
    print(f"{session_path}: {count(len(seeds), 'seed')} confirmed on replay; {len(recorded)} recorded trigger(s), "
          f"{len(replayed)} replayed: {'the same' if same else 'NOT the same'}")
    return 0 if same else 1


def run(args) -> int:
    from insitu.core.errors import UserError

    if not (args.speed > 0 and args.speed < float("inf")):
        raise UserError(f"--speed must be a finite number > 0, got {args.speed:g}")
    if args.triggers:
        if args.out or args.analyze or args.gui:
            raise UserError("--triggers replays for the rules only; drop --out/--analyze/--gui")
        return _check_triggers(args.session)
    if args.gui:
        if args.out or args.analyze:
            raise UserError("--gui shows the replay only; drop --out/--analyze or run them without --gui")
        from insitu.cli import main

        return main(["gui", "--replay", args.session, "--speed", str(args.speed)])

    from pathlib import Path

    from insitu.core.progress import StatusLine
    from insitu.runner import ReplayRunner

    runner = ReplayRunner(args.session, args.out, speed=args.speed, overwrite=args.overwrite)
    sinks = []
    analyzer = None
    if args.analyze:
        from insitu.analysis.pipeline import LiveAnalyzer
        from insitu.core.records import FrameRecord

        analyzer = LiveAnalyzer()
        Path(args.analyze).mkdir(parents=True, exist_ok=True)
        sinks.append(lambda r: analyzer.feed(r.data, r.time_s) if isinstance(r, FrameRecord) else None)
    progress = None
    if not args.quiet:
        progress = _Progress(runner, StatusLine(sys.stderr))
        sinks.append(progress)
    try:
        outcome = runner.run(sinks)
    finally:
        if progress is not None:
            progress.stream.close()
    player = runner.player
    msg = f"replayed {player.n_emitted} records ({count(player.session.n_frames, 'frame')}, " \
          f"{player.duration_s:.1f} s recorded) at {args.speed:g}×: {outcome}"
    if args.out:
        msg += f"; wrote {args.out}"
    if analyzer is not None:
        from insitu.analysis.pipeline import write_seeds_csv

        path = write_seeds_csv(analyzer.seeds_table(), Path(args.analyze) / "seeds.csv")
        msg += f"; {len(analyzer.seeds_table()['id'])} seeds -> {path}"
    print(msg)
    return runner.exit_code
