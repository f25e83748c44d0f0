"""``insitu demo``: the virtual-specimen experiment end to end: run, simulate, analyse, report."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from insitu.core.errors import UserError
from insitu.core.units import count

HELP = "Run the virtual-specimen experiment end to end: run, simulate, analyse, report"
DESCRIPTION = """\
Run the paper's protocol (examples/ding2023.yaml: 1st Na extraction 10-17 V,
reverse bias, 2nd extraction, HAADF frames all along) on the virtual specimen
with an accelerated clock, then run the transport simulation, the analysis
(drift, differential images, seeds, correlation with GB current jumps) and
write one HTML report. The virtual specimen knows where its filament seeds
are, so the demo scores the analysis against that ground truth.

Outputs in DIR: session.h5 (and its session.log), simulation/, analysis/ (seeds.csv, ...), report.html.

examples:
  insitu demo --out demo-output
  insitu demo --out /tmp/d --seed 3 --time-scale 120
"""

#: the demo's specimen (its story is the paper's: interface seeds first, then GB seeds on enough distinct
#: GBs for the GB-level test to have power: 7 GB seeds on 3 GBs, p = 0.028 in an offline run)
DEFAULT_SEED = 12
#: target wall time of the accelerated run (s)
TARGET_RUN_S = 50.0


def add_arguments(parser):
    parser.add_argument("--out", default="demo-output", metavar="DIR", help="output folder (default demo-output)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"virtual specimen seed (default {DEFAULT_SEED})")
    parser.add_argument("--protocol", default=None, metavar="YAML",
                        help="protocol to run (default examples/ding2023.yaml)")
    parser.add_argument("--time-scale", type=float, default=None, metavar="X",
                        help=f"clock acceleration (default: the protocol takes about {TARGET_RUN_S:.0f} s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def find_example(name: str) -> Path:
    """An ``examples/`` file of the checkout (beside the package) or of the working folder."""
    import insitu

    for base in (Path(insitu.__file__).resolve().parents[1], Path.cwd()):
        p = base / "examples" / name
        if p.is_file():
            return p
    raise UserError(f"examples/{name}: not found beside the insitu package or in the working folder "
                    "(give --protocol)")


def _bar(label: str, frac: float, text: str = "", width: int = 30) -> str:
    """A progress bar as one status text.

    Examples
    --------
    >>> _bar("run", 0.5, "hold", width=10)
    'run       [#####.....]  50.0% hold'
    """
    frac = min(max(frac, 0.0), 1.0)
    n = int(round(frac * width))
    return f"{label:<9} [{'#' * n}{'.' * (width - n)}] {100 * frac:5.1f}% {text[:48]}"


class _Bar:
    """A progress bar drawn through :class:`~insitu.core.progress.StatusLine` (``None`` stream: silent)."""

    def __init__(self, label: str, stream):
        self.label, self.stream = label, stream
        self._t = -1.0

    def update(self, frac: float, text: str = "") -> None:
        now = time.monotonic()
        if self.stream is None or (now - self._t < 0.1 and frac < 1.0):
            return
        self._t = now
        self.stream.write("\r" + _bar(self.label, frac, text))
        self.stream.flush()

    def done(self, text: str = "") -> None:
        if self.stream is not None:
            self._t = -1.0
            self.update(1.0, text)
            self.stream.close()


def run_virtual_experiment(protocol, session_path: Path, *, seed: int = 0, time_scale: float | None = None,
                           bar: _Bar | None = None, specimen=None):
    """Run ``protocol`` on the virtual specimen; record ``session_path`` with the ground truth.

    Goes through :class:`insitu.runner.ProtocolRunner` (as ``insitu run --mock``
    and the GUI do), so the session carries the same metadata. Returns
    ``(status, specimen, engine)``; status is ``complete`` or ``aborted`` (a
    suspender fired: what was recorded is kept).
    """
    from insitu.control.config import DEFAULT_FRAME_INTERVAL_S, mock_toml, parse_instruments
    from insitu.control.protocol import expand
    from insitu.core.errors import StoppedEarly
    from insitu.core.records import ProgressRecord
    from insitu.runner import ProtocolRunner
    from insitu.virtual.instruments import open_virtual_instruments
    from insitu.virtual.specimen import VirtualSpecimen

    config_text = mock_toml(DEFAULT_FRAME_INTERVAL_S)    # the same mock instruments as insitu run --mock
    config = parse_instruments(config_text, "mock instruments")
    if specimen is None:
        specimen = VirtualSpecimen(seed=seed)   # lamella + one transport simulation (a second or two)
    timeline = expand(protocol, config.beam.probe_current_A, frame_rate_hz=config.frames.rate_hz)
    if time_scale is None:
        time_scale = max(1.0, timeline.duration_s / TARGET_RUN_S)
    if not (0 < time_scale < 1e6):
        raise UserError(f"--time-scale: must be > 0 (got {time_scale!r})")

    def progress(rec):
        if bar is not None and isinstance(rec, ProgressRecord):
            total = rec.elapsed_s + rec.remaining_s
            bar.update(rec.elapsed_s / total if total > 0 else 0.0,
                       f"{rec.elapsed_s:5.0f}/{total:.0f} s  {rec.step_label}")

    runner = ProtocolRunner(protocol, config, config_text, session_path, overwrite=True, time_scale=time_scale,
                            seed=seed, program="insitu demo",
                            open_instruments=lambda cfg, clock, seed=0: open_virtual_instruments(
                                cfg, clock, seed=seed, specimen=specimen))
    try:
        runner.run([progress])
    except StoppedEarly as exc:
        print(f"\ninsitu demo: the run stopped early: {exc}", file=sys.stderr)
    engine = runner.engine
    if bar is not None:
        bar.done(f"{runner.status}: {engine.n_frames if engine else 0} frames")
    return runner.status, specimen, engine


def story(specimen, truth: dict) -> dict:
    """The paper's story in the ground truth: interface seeds first, then seeds at GBs.

    For each GB seed: the rank of its boundary's simulated current jump among all GBs and
    whether the boundary reaches the Au(Pt) electrode.
    """
    import numpy as np

    from insitu.analysis.transport.microstructure import boundary_pixels

    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in truth["kind"]]
    first = np.asarray(truth["first_frame"])
    order = np.argsort(first, kind="stable")
    tab = specimen.simulation.gb_table
    jumps = np.abs(np.asarray(tab["jump"], float))
    pair_rank, pair_type = {}, {}
    types = tab.get("gb_type")
    blocking = tab.get("blocking")
    for r, i in enumerate(np.argsort(-jumps)):
        key = (int(tab["grain_a"][i]), int(tab["grain_b"][i]))
        pair_rank[key] = r + 1
        t = "" if types is None else str(types[i].decode() if isinstance(types[i], bytes) else types[i])
        pair_type[key] = (t, None if blocking is None else bool(blocking[i]))
    b = boundary_pixels(specimen.microstructure.grains)
    reach = {}
    for a, c, y, x in zip(b["grain_a"], b["grain_b"], b["ya"], b["xa"]):
        k = (int(a), int(c))
        reach[k] = min(reach.get(k, np.inf), float(specimen.dist_top[y, x]))
    gb = []
    for i in order:
        if kinds[i] != "gb":
            continue
        pair = (int(min(truth["grain_a"][i], truth["grain_b"][i])), int(max(truth["grain_a"][i], truth["grain_b"][i])))
        gtype, gblock = pair_type.get(pair, ("", None))
        gb.append(dict(frame=int(first[i]), pair=pair, rank=pair_rank.get(pair), n_gb=len(jumps),
                       touches_electrode=bool(reach.get(pair, np.inf) <= 3.0), gb_type=gtype, blocking=gblock))
    iface = [int(first[i]) for i in order if kinds[i] == "interface"]
    return dict(kinds_in_order=[kinds[i] for i in order], interface_frames=iface, gb=gb,
                interface_first=bool(iface) and (not gb or iface[0] <= gb[0]["frame"]))


def _overlay_figure(frame, truth, found, pairs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 6))
    lo, hi = np.percentile(frame, [1, 99.5])
    ax.imshow(frame, cmap="gray", vmin=lo, vmax=hi)
    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in truth["kind"]]
    for x, y, k in zip(truth["x_px"], truth["y_px"], kinds):
        ax.add_patch(plt.Circle((x, y), 6, fill=False, color="lime" if k == "interface" else "cyan", lw=1.2))
    ax.plot(found["x_px"], found["y_px"], "r+", ms=8, mew=1.5)
    ax.set_title("first frame: true seeds (green: interface, cyan: GB), found (red +)", fontsize=9)
    ax.set_axis_off()
    return fig


def write_demo_report(path: Path, analysis_report: Path | None, *, truth: dict, found: dict, score: dict,
                      st: dict, first_frame, summary_lines: list[str]) -> Path:
    """DIR/report.html: the analysis report plus a ground-truth section (scores, overlay figure)."""
    import html

    body = ["<section id='virtual-truth'><h2>Virtual specimen: ground truth</h2>",
            "<p class='note'><b>Read this first:</b> " + html.escape(CIRCULARITY) + ". A real lamella's seeds "
            "against its own simulation are the scientific test; see the Statistics section for what the "
            "GB-level test controls for and what it does not.</p>",
            "<pre style='white-space:pre-wrap'>" + html.escape("\n".join(summary_lines)) + "</pre>",
            "<table border=1 cellpadding=3><tr><th>true seeds</th><th>found</th><th>TP</th><th>FP</th>"
            "<th>FN</th><th>F1</th><th>mean error (px)</th><th>median latency (frames)</th></tr>",
            f"<tr><td>{len(truth['x_px'])}</td><td>{len(found['x_px'])}</td><td>{score['tp']}</td>"
            f"<td>{score['fp']}</td><td>{score['fn']}</td><td>{score['f1']:.2f}</td>"
            f"<td>{score['mean_error_px']:.2f}</td><td>{score['median_latency']}</td></tr></table>"]
    try:
        from insitu.analysis.report import _png  # the report's own PNG embedding

        import matplotlib.pyplot as plt

        fig = _overlay_figure(first_frame, truth, found, score.get("pairs", []))
        body.append(f"<p><img alt='true and found seeds' src='data:image/png;base64,{_png(fig)}'></p>")
        plt.close(fig)
    except Exception as exc:  # a missing figure must not lose the report
        body.append(f"<p>(overlay figure not drawn: {html.escape(str(exc))})</p>")
    if st["gb"]:
        body.append("<p>GB seeds (in order of appearance): " + "; ".join(
            f"frame {g['frame']}: G{g['pair'][0]}/G{g['pair'][1]} ({g.get('gb_type') or '?'}), "
            f"|jump| rank {g['rank']} of {g['n_gb']}"
            + (", ends at the Au(Pt)" if g["touches_electrode"] else "") for g in st["gb"]) + "</p>")
    body.append("</section>")
    section = "\n".join(body)
    text = analysis_report.read_text(encoding="utf-8") if analysis_report and analysis_report.is_file() else \
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>insitu demo</title></head><body></body></html>"
    i = text.rfind("</body>")
    text = text[:i] + section + text[i:] if i >= 0 else text + section
    path.write_text(text, encoding="utf-8")
    return path


def run(args) -> int:
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: must be >= 0")
    import json
    import shutil

    import numpy as np

    from insitu.analysis.transport.microstructure import write_microstructure
    from insitu.analysis.pipeline import analyze
    from insitu.analysis.image.seeds import match_seeds
    from insitu.analysis.transport.simulator import save_result
    from insitu.control.protocol import load_protocol
    from insitu.core.session import open_session

    t0 = time.monotonic()
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output folder: {exc.strerror}") from None
    protocol = load_protocol(args.protocol or find_example("ding2023.yaml"))
    session_path = out / "session.h5"

    from insitu.core.progress import status_stream

    bar = _Bar("run", status_stream(args.quiet))
    status, specimen, engine = run_virtual_experiment(protocol, session_path, seed=args.seed,
                                                      time_scale=args.time_scale, bar=bar)
    t_run = time.monotonic() - t0

    sim_dir = out / "simulation"
    if sim_dir.exists():
        shutil.rmtree(sim_dir)
    save_result(specimen.simulation, sim_dir)
    write_microstructure(sim_dir / "microstructure.h5", specimen.microstructure)

    abar = _Bar("analyse", status_stream(args.quiet))
    paths = analyze(session_path, out / "analysis", microstructure=specimen.microstructure,
                    simulation=specimen.simulation,
                    progress=lambda k, n: abar.update(k / n if n else 0.0, f"frame {k}/{n}"))
    abar.done()

    with open_session(session_path) as s:
        truth = s.group("/entry/sample/truth/seeds")
        n_frames = s.n_frames
        v = s.bias["voltage"]
        dose = float(s.frame_table["dose"][-1]) if n_frames else 0.0
        first_frame = s.frame(0) if n_frames else np.zeros(specimen.base.shape)
    found = _read_seeds(paths["seeds"])
    score = match_seeds(found, truth, radius_px=4.0)
    st = story(specimen, truth)
    stats = {}
    if paths.get("statistics") and Path(paths["statistics"]).is_file():
        stats = json.loads(Path(paths["statistics"]).read_text())

    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in truth["kind"]]
    lines = [
        f"seeds:       found {len(found['x_px'])}, true {len(truth['x_px'])} ({kinds.count('interface')} at the "
        f"Au(Pt) interface, {kinds.count('gb')} at GBs); matched {score['tp']} within 4 px: "
        f"F1 {score['f1']:.2f}, mean error {score['mean_error_px']:.2f} px",
        "story:       " + _story_line(st),
        "correlation: " + _stats_line(stats),
    ]
    report = write_demo_report(out / "report.html", Path(paths["report"]) if paths.get("report") else None,
                               truth=truth, found=found, score=score, st=st, first_frame=first_frame,
                               summary_lines=lines)
    total = time.monotonic() - t0
    print(f"insitu demo: {status} in {total:.0f} s (run {t_run:.0f} s at {engine.clock.time_scale if engine else 0:.0f}x)")
    print(f"  session     {session_path}  ({count(n_frames, 'frame')}, bias {v.min():.0f}..{v.max():.0f} V, "
          f"dose {dose:.4g} e/Å², specimen seed {args.seed})")
    print(f"  simulation  {sim_dir}/")
    print(f"  analysis    {out / 'analysis'}/  (seeds.csv, drift.csv, differential.h5, statistics.json)")
    print(f"  report      {report}")
    for ln in lines:
        print(ln)
    return 0 if status == "complete" else 3


def _read_seeds(path) -> dict:
    import csv

    import numpy as np

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cols = ("x_px", "y_px", "first_frame")
    out = {c: np.array([float(r[c]) for r in rows]) for c in cols}
    out["first_frame"] = out["first_frame"].astype(int)
    return out


def _story_line(st: dict) -> str:
    iface = st["interface_frames"]
    parts = []
    if iface:
        parts.append(f"interface seeds from frame {iface[0]}" + (" (first)" if st["interface_first"] else ""))
    if st["gb"]:
        g = st["gb"][0]
        kind = f"type {g['gb_type']}" + (", blocking" if g.get("blocking") else "") if g.get("gb_type") else ""
        parts.append(f"first GB seed at frame {g['frame']} on G{g['pair'][0]}/G{g['pair'][1]} "
                     f"(|jump| rank {g['rank']} of {g['n_gb']} GBs"
                     + (f", {kind}" if kind else "")
                     + (", ends at the Au(Pt))" if g["touches_electrode"] else ")"))
        if len(st["gb"]) > 1:
            parts.append(f"then {len(st['gb']) - 1} more at GBs")
    return "; ".join(parts) if parts else "no seeds (too little charge passed?)"


#: what the demo's correlation shows, and what it cannot (printed and in the report)
CIRCULARITY = ("the virtual specimen nucleates from the same simulated driving force the test measures "
               "(insitu.analysis.correlate.DRIVING_FORCE), so the demo checks the pipeline, not the physics")


def _stats_line(stats: dict) -> str:
    if not stats:
        return "not computed (see analysis/summary.json)"
    from insitu.analysis.correlate import stats_line

    return f"{stats_line(stats)}; caveat: {CIRCULARITY}"
