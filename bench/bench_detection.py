"""Detection-limit curve: detection probability and false seeds against seed contrast.

Over configurations of the independent series family (tests/seriesfamily.py, the held-out
seeds, never tuned on), every seed is given the same peak contrast c (fraction of the local
intensity); the series are analysed with the default :class:`LiveAnalyzer` and scored
within 4 px. Prints P(detect) and false seeds per series for each c, the contrast at 50 %
and 90 % detection (linear interpolation), and writes docs/detection_limit.png.

Run: ``.venv/bin/python -m bench bench_detection`` (env BENCH_DETECT_SIZE, BENCH_DETECT_FRAMES,
BENCH_DETECT_CONFIGS shrink it).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CONTRASTS = (0.02, 0.035, 0.05, 0.065, 0.08, 0.10, 0.12)


def _crossing(x, p, level):
    for i in range(1, len(x)):
        if p[i - 1] < level <= p[i]:
            return float(x[i - 1] + (level - p[i - 1]) * (x[i] - x[i - 1]) / (p[i] - p[i - 1]))
    return float("nan") if p[-1] < level else float(x[0])


def main() -> dict:
    from seriesfamily import HELD_OUT_SEEDS, make
    from insitu.analysis.pipeline import LiveAnalyzer
    from insitu.analysis.image.seeds import match_seeds

    size = int(os.environ.get("BENCH_DETECT_SIZE", 512))
    n_frames = int(os.environ.get("BENCH_DETECT_FRAMES", 60))
    configs = HELD_OUT_SEEDS[:int(os.environ.get("BENCH_DETECT_CONFIGS", 3))]
    pd, fa = [], []
    t0 = time.perf_counter()
    for c in CONTRASTS:
        tp = n = fp = 0
        for cfg in configs:
            s = make(cfg, shape=(size, size), n_frames=n_frames, contrast=(c, c))
            la = LiveAnalyzer()
            for f, t in zip(s.frames, s.times):
                la.feed(f, t)
            sc = match_seeds(la.seeds_table(), s.seeds, 4.0)
            tp, n, fp = tp + sc["tp"], n + len(s.seeds["x_px"]), fp + sc["fp"]
        pd.append(tp / max(1, n))
        fa.append(fp / len(configs))
        print(f"contrast {c:5.3f}: P(detect) {pd[-1]:.2f} ({tp}/{n}), false seeds per series {fa[-1]:.2f}", flush=True)
    c50, c90 = _crossing(CONTRASTS, pd, 0.5), _crossing(CONTRASTS, pd, 0.9)
    print(f"contrast at 50 % detection: {c50:.3f}, at 90 %: {c90:.3f} ({len(configs)} held-out configurations, "
          f"{size}² × {n_frames} frames, {time.perf_counter() - t0:.0f} s)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    ax.plot(np.array(CONTRASTS) * 100, pd, "o-", label="P(detect)")
    ax.set_xlabel("seed peak contrast (% of local intensity)")
    ax.set_ylabel("detection probability")
    ax.set_ylim(-0.02, 1.02)
    ax2 = ax.twinx()
    ax2.plot(np.array(CONTRASTS) * 100, fa, "s--", color="C3", label="false seeds / series")
    ax2.set_ylabel("false seeds per series", color="C3")
    ax.set_title(f"detection limit ({size}² × {n_frames} frames)")
    fig.tight_layout()
    out = ROOT / "docs" / "detection_limit.png"
    fig.savefig(out)
    print(f"curve: {out}")
    return dict(contrasts=list(CONTRASTS), p_detect=pd, false_per_series=fa, c50=c50, c90=c90)


if __name__ == "__main__":
    main()
