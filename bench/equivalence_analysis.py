"""Equivalence check for speed work on the live analysis: the same seeds before and after.

Runs :class:`~insitu.analysis.pipeline.LiveAnalyzer` on a few series (tuning configurations of
``tests/seriesfamily.py`` at 512² (working step 1) and 1024² (step 2), and ``tests/seriesgen.py``
at 1024² and 160²) and saves the seeds tables and drifts to an ``.npz``; with a second file it
compares them: the same seeds (paired by position and sign), the same ``first_frame``,
positions within ``tol_px`` (0.05 px), drifts within 0.01 px; it prints how many differ in
``last_frame`` and the largest difference of ``peak_snr``.

Not a benchmark (not named ``bench_*``): ``make bench`` does not run it.

Run::

    .venv/bin/python -m bench.equivalence_analysis save /tmp/before.npz
    .venv/bin/python -m bench.equivalence_analysis save /tmp/after.npz
    .venv/bin/python -m bench.equivalence_analysis compare /tmp/before.npz /tmp/after.npz
    .venv/bin/python -m bench.equivalence_analysis save /tmp/noise.npz --perturb [case ...]

The last one measures what rounding alone changes (frames × (1 + 2⁻²²)), for comparison.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

COLUMNS = ("first_frame", "x_px", "y_px", "sign", "last_frame", "area_px", "peak_snr")


def _cases():
    """(name, frames, times): tuning configurations only (the held-out sets stay held out)."""
    import seriesfamily as sf
    from seriesgen import make_series

    for seed in (0, 3):
        s = sf.make(seed)
        yield f"family{seed}_512", s.frames, s.times
    s = sf.render(sf.draw_config(5, shape=(1024, 1024), n_frames=30))
    yield "family5_1024", s.frames, s.times
    s = make_series(n_frames=40, shape=(1024, 1024), seed=0, drift_px=8.0)
    yield "seriesgen0_1024", s.frames, s.times
    s = make_series(n_frames=40, shape=(160, 160), seed=1)
    yield "seriesgen1_160", s.frames, s.times


def run(names=None, perturb: bool = False) -> dict:
    """Seeds tables and drifts of every case, as one flat dict of arrays.

    ``perturb``: every frame × (1 + 2⁻²²) (a change of the size of float32 rounding), to measure
    how far rounding alone moves the results (the tolerance a faster implementation can be held to).
    """
    from insitu.analysis.pipeline import LiveAnalyzer

    out = {}
    for name, frames, times in _cases():
        if names and name not in names:
            continue
        la = LiveAnalyzer()
        for f, t in zip(frames, times):
            if perturb:
                f = np.asarray(f, np.float32) * np.float32(1 + 2.0 ** -22)
            la.feed(f, float(t))
        tab = la.seeds_table()
        for c in COLUMNS:
            out[f"{name}/{c}"] = np.asarray(tab[c])
        out[f"{name}/drift"] = np.asarray(la.drift, float)
        print(f"{name}: {len(tab['id'])} seeds", flush=True)
    return out


def compare(a: dict, b: dict, tol_px: float = 0.05) -> bool:
    """Print the differences between two runs; True when they are equivalent."""
    ok = True
    names = sorted({k.split("/")[0] for k in a} & {k.split("/")[0] for k in b})
    for name in names:
        ta = {c: a[f"{name}/{c}"] for c in COLUMNS}
        tb = {c: b[f"{name}/{c}"] for c in COLUMNS}
        dd = float(np.max(np.abs(a[f"{name}/drift"] - b[f"{name}/drift"]))) if len(a[f"{name}/drift"]) else 0.0
        msg = [f"{name}: seeds {len(ta['x_px'])} / {len(tb['x_px'])}, max drift diff {dd:.2g} px"]
        good = len(ta["x_px"]) == len(tb["x_px"]) and dd <= 0.01
        if len(ta["x_px"]) and len(tb["x_px"]):
            # seeds are numbered in order of confirmation: pair each with the nearest of the other run
            dist = np.hypot(ta["x_px"][:, None] - tb["x_px"][None], ta["y_px"][:, None] - tb["y_px"][None])
            dist[ta["sign"][:, None] != tb["sign"][None]] = np.inf
            j = np.argmin(dist, axis=1)
            dp = dist[np.arange(len(j)), j]
            paired = (dp <= 1.0) & (np.bincount(j, minlength=len(tb["x_px"]))[j] == 1)
            diff_frames = {c: int(np.count_nonzero(ta[c][paired] != tb[c][j[paired]])) for c in ("first_frame", "last_frame")}
            dsnr = float(np.max(np.abs(ta["peak_snr"][paired] - tb["peak_snr"][j[paired]]), initial=0.0))
            maxd = float(np.max(dp[paired], initial=0.0))
            msg.append(f"unpaired {int(np.count_nonzero(~paired))}, other first_frame {diff_frames['first_frame']}, "
                       f"other last_frame {diff_frames['last_frame']}, max position diff {maxd:.3g} px "
                       f"(n > {tol_px} px: {int(np.count_nonzero(dp[paired] > tol_px))}), max peak diff {dsnr:.3g} σ")
            good = good and paired.all() and diff_frames["first_frame"] == 0 and maxd <= tol_px
        print(("OK   " if good else "DIFF ") + ", ".join(msg))
        ok &= good
    return ok


if __name__ == "__main__":
    if sys.argv[1] == "save":
        rest = [a for a in sys.argv[3:] if a != "--perturb"]
        np.savez(sys.argv[2], **run(rest, perturb="--perturb" in sys.argv[3:]))
    else:
        a, b = dict(np.load(sys.argv[2])), dict(np.load(sys.argv[3]))
        res = compare(a, b)
        same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        print(("EQUIVALENT" if res else "NOT EQUIVALENT") + (" (bit for bit identical)" if same else ""))
        sys.exit(0 if res else 1)
