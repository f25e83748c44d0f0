"""``insitu info``: summarise a session file."""
from __future__ import annotations

HELP = "Summarise a session file"
DESCRIPTION = """\
Summarise a session file: protocol name, status, duration, bias samples,
frames, events. Works on complete, aborted and killed (crashed) sessions and
on files still being written. A file whose writer died (no process holds the
writer's lock) is finished on the way: status "interrupted", with the last
sample time, and a plain HDF5 file again (any verb that reads it does this).

example:
  insitu info run1.h5
  insitu info run1.h5 --events
"""


def add_arguments(parser):
    parser.add_argument("session", help="session file (.h5)")
    parser.add_argument("--events", action="store_true", help="list every event, not only the counts")


def _fmt_si(x: float, unit: str) -> str:
    import math

    if not math.isfinite(x):
        return f"nan {unit}"
    if x == 0:
        return f"0 {unit}"
    for factor, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f")):
        if abs(x) >= factor:
            return f"{x / factor:.4g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def summary_lines(s, list_events: bool = False) -> list[str]:
    """Text lines describing an open :class:`~insitu.core.session.Session`."""
    from collections import Counter

    import numpy as np

    lines = [f"session:    {s.path}"]
    if s.closed_cleanly:
        status = s.status
    else:
        status = f"{s.status} (being written: everything up to the writer's last flush is here)"
    lines.append(f"status:     {status}")
    lines.append(f"protocol:   {s.protocol_name or '(none)'}")
    lines.append(f"started:    {s.start_time}" + (f"   ended: {s.end_time}" if s.end_time else ""))
    lines.append(f"program:    {s.program} {s.version}".rstrip())
    t0, t1 = s.t_first_s, s.duration_s
    lines.append(f"duration:   {t1 - t0:.1f} s" + (f" (records from t = {t0:.1f} to {t1:.1f} s)" if abs(t0) > 0.05 else ""))
    b = s.bias
    n = len(b["time"])
    if n:
        v = b["voltage"]
        i_abs = np.abs(b["current"])
        dt = np.median(np.diff(b["time"])) if n > 1 else float("nan")
        lines.append(f"bias:       {n} samples (every {dt:.3g} s), V {v.min():.4g} .. {v.max():.4g} V, "
                     f"|I| max {_fmt_si(float(i_abs.max()), 'A')}, compliance hits {int(b['compliance'].sum())}")
    else:
        lines.append("bias:       0 samples")
    bm = s.beam
    if len(bm["time"]):
        lines.append(f"beam:       {len(bm['time'])} state records, blanked at end: {bool(bm['blanked'][-1])}")
    if s.n_frames:
        ft = s.frame_table
        ps = s.pixel_size_m
        lines.append(f"frames:     {s.n_frames} × {s.frame_shape[0]}×{s.frame_shape[1]} {s.frame_dtype}, "
                     f"pixel {_fmt_si(ps, 'm')}, t {ft['time'][0]:.2f} .. {ft['time'][-1]:.2f} s, "
                     + (f"dose {ft['dose'][-1]:.4g} e/Å²" if np.isfinite(ft["dose"][-1]) else "dose unknown"))
    else:
        lines.append("frames:     0")
    kinds = Counter(k for _, k, _ in s.events)
    lines.append(f"events:     {len(s.events)}" + (" (" + ", ".join(f"{k} {c}" for k, c in kinds.items()) + ")"
                                                   if kinds else ""))
    shown = s.events if list_events else [e for e in s.events if e[1] not in ("step", "info")][-5:]
    for t, k, m in shown:
        lines.append(f"  {t:9.2f} s  {k:<11} {m}")
    if s.has("/entry/sample/truth"):
        lines.append("truth:      /entry/sample/truth present (virtual specimen)")
    return lines


def run(args) -> int:
    from insitu.core.session import open_session

    with open_session(args.session) as s:  # a dead writer's file is finished as "interrupted" on the way
        if s.recovered:
            print(f"{s.path}: its writer had stopped without closing it; marked interrupted, flags cleared")
        print("\n".join(summary_lines(s, args.events)))
    return 0
