"""Score the detector on configurations of the widened family, misses and false seeds by category.

Not a ``bench_`` module (``make bench`` does not run it): a development tool for issue 15.
Categories of a true seed: ``pair_young`` / ``pair_old`` (a partner within 9 px, the later / the
earlier one), ``early`` (first frame ≤ 5), ``band``, ``late`` (first frame ≥ n − 12), ``other``;
a series is ``low dose`` below 80 counts/px. A false seed is ``near_true`` (within 12 px of a
true seed: a misplaced or split one), ``row_edge`` (in the top or bottom 12 % of the rows, where
the scan distortion is largest) or ``other``.

Run: ``.venv/bin/python -m bench.eval_wide 3000 3001 ...`` (configurations of
``draw_wide_config``; ``--family`` for ``draw_config``). Prints one line per series and a total.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def categorise(s, tab, sc) -> dict:
    """Per true seed its categories and whether it was found; per false seed its category."""
    tx, ty, tf = (np.asarray(s.seeds[k], float) for k in ("x_px", "y_px", "first_frame"))
    n = s.config["n_frames"]
    ny = s.config["shape"][0]
    d = np.hypot(tx[:, None] - tx[None], ty[:, None] - ty[None])
    np.fill_diagonal(d, np.inf)
    found = {j: i for i, j, _ in sc["pairs"]}
    seeds = []
    for j in range(len(tx)):
        cat = []
        p = int(np.argmin(d[j])) if len(tx) > 1 else -1
        if p >= 0 and d[j, p] < 9:
            cat.append("pair_young" if (tf[j], j) > (tf[p], p) else "pair_old")
        if tf[j] <= 5:
            cat.append("early")
        if s.seeds["at_band"][j]:
            cat.append("band")
        if tf[j] >= n - 12:
            cat.append("late")
        seeds.append(dict(cat=cat or ["other"], found=j in found,
                          latency=(int(tab["first_frame"][found[j]]) - int(tf[j])) if j in found else None))
    matched = {i for i, _, _ in sc["pairs"]}
    false = []
    for i in range(len(tab["id"])):
        if i in matched:
            continue
        x, y = float(tab["x_px"][i]), float(tab["y_px"][i])
        dd = np.hypot(tx - x, ty - y).min() if len(tx) else np.inf
        cat = "near_true" if dd < 12 else ("row_edge" if min(y, ny - 1 - y) < 0.12 * ny else "other")
        false.append(dict(cat=cat, x=round(x, 1), y=round(y, 1), first=int(tab["first_frame"][i]),
                          sign=int(tab["sign"][i]), peak=round(float(tab["peak_snr"][i]), 1)))
    return dict(seeds=seeds, false=false)


def run(seed: int, wide: bool = True, **kw) -> dict:
    from seriesfamily import draw_config, draw_wide_config, render
    from insitu.analysis.pipeline import LiveAnalyzer
    from insitu.analysis.image.seeds import match_seeds

    s = render((draw_wide_config if wide else draw_config)(seed, **kw))
    import json
    import os
    la = LiveAnalyzer(**json.loads(os.environ.get("DETQ_KW", "{}")))
    t0 = time.process_time()
    for f, t in zip(s.frames, s.times):
        la.feed(f, t)
    cpu = time.process_time() - t0
    tab = la.seeds_table()
    sc = match_seeds(tab, s.seeds, radius_px=4.0)
    out = categorise(s, tab, sc)
    out.update(seed=seed, f1=sc["f1"], tp=sc["tp"], fp=sc["fp"], fn=sc["fn"], cpu_s=cpu,
               counts=s.config["counts"], shear=s.config.get("shear_px", 0), line=s.config["line_noise"],
               err=sc["mean_error_px"], lat=sc["median_latency"])
    return out


def main(argv) -> None:
    wide = "--family" not in argv
    seeds = [int(a) for a in argv if not a.startswith("--")]
    miss, tot, fcat = Counter(), Counter(), Counter()
    f1 = []
    for sd in seeds:
        r = run(sd, wide)
        f1.append(r["f1"])
        for s in r["seeds"]:
            for c in s["cat"]:
                tot[c] += 1
                miss[c] += not s["found"]
        for f in r["false"]:
            fcat[f["cat"]] += 1
        lost = [("+".join(s["cat"]), s["latency"]) for s in r["seeds"] if not s["found"] or (s["latency"] or 0) > 2]
        print(f"{sd}: F1 {r['f1']:.3f} tp {r['tp']} fp {r['fp']} fn {r['fn']} err {r['err']:.2f} lat {r['lat']} "
              f"counts {r['counts']:.0f} shear {r['shear']:.2f} line {r['line']:.3f} cpu {r['cpu_s']:.0f}s | "
              f"missed/late {lost} | false {[(f['cat'], f['x'], f['y'], f['first'], f['peak']) for f in r['false']]}",
              flush=True)
    print(f"mean F1 {np.mean(f1):.3f} min {np.min(f1):.2f} | per series {' '.join(f'{v:.2f}' for v in f1)}")
    print("missed / total by category:", {c: f"{miss[c]}/{tot[c]}" for c in sorted(tot)})
    print("false seeds by category:", dict(fcat))


if __name__ == "__main__":
    main(sys.argv[1:])
