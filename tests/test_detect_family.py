"""Seed detection on the independent series family (tests/seriesfamily.py, issue 15).

The default run analyses a few configurations of the family at 512² × 60 frames, each forced
to contain one of the hard cases (8 % contrast, dark seeds, seeds under the electrode band,
15 px drift, a large dark offset, many specks) plus a no-seed series; the full family (the
configurations used while tuning and the held-out ones, reported separately) is marked slow.
"""
from __future__ import annotations

import numpy as np
import pytest

from insitu.analysis.image.evidence import EvidenceAccumulator
from insitu.analysis.pipeline import LiveAnalyzer
from insitu.analysis.image.seeds import match_seeds
from seriesfamily import HELD_OUT_SEEDS, TUNE_SEEDS, draw_config, make, render


def _analyse(series):
    la = LiveAnalyzer()
    for f, t in zip(series.frames, series.times):
        la.feed(f, t)
    tab = la.seeds_table()
    return la, tab, match_seeds(tab, series.seeds, radius_px=4.0)


def _check_family(scores):
    f1 = [sc["f1"] for sc in scores]
    err = [p[2] for sc in scores for p in sc["pairs"]]
    lat = [v for sc in scores for v in sc["latencies"]]
    assert np.mean(f1) >= 0.95, f1
    assert min(f1) >= 0.85, f1
    assert np.mean(err) <= 1.0, np.mean(err)
    assert np.median(lat) <= 2, lat
    ok = [v for sc in scores for v in sc["sign_ok"]]
    assert np.mean(ok) == 1.0


#: held-out configurations, each pushed to one hard case (never used while tuning)
HARD = {
    "8 % contrast": dict(seed=1010, contrast=(0.08, 0.085)),
    "half dark": dict(seed=1011, dark_fraction=0.5),
    "under the band": dict(seed=1012, n_band_seeds=6),
    "15 px drift": dict(seed=1013, drift_px=15.0),
    "800 counts offset, 100 counts": dict(seed=1014, offset=800.0, counts=100.0),
    "3 specks a frame": dict(seed=1015, speck_rate=3.0),
}


@pytest.fixture(scope="module")
def hard_scores():
    out = {}
    for name, kw in HARD.items():
        kw = dict(kw)
        s = render(draw_config(kw.pop("seed"), **kw))
        out[name] = (s, _analyse(s)[2])
    return out


def test_hard_cases_of_the_family(hard_scores):
    """F1, position error and latency over the hard configurations (the Done-when of issue 15)."""
    _check_family([sc for _, sc in hard_scores.values()])


def test_weak_dark_and_band_seeds_are_found(hard_scores):
    for name in ("8 % contrast", "half dark", "under the band"):
        s, sc = hard_scores[name]
        found = {j for _, j, _ in sc["pairs"]}
        if name == "half dark":
            dark = np.flatnonzero(s.seeds["sign"] < 0)
            assert len(dark) >= 3 and set(dark) <= found, name
        elif name == "under the band":
            band = np.flatnonzero(s.seeds["at_band"])
            assert len(band) >= 5 and set(band) <= found, name
        else:
            assert sc["fn"] == 0, name


def test_no_seed_series_gives_at_most_one_false_seed():
    """The threshold's promise: at the default, at most 1 false seed per 60-frame 512² series
    (band edge, GBs and particle rims under 12 px of drift, specks, decay, offset)."""
    for seed in (1020, 1021):
        s = make(seed, n_seeds=0, drift_px=12.0, speck_rate=2.0)
        _, tab, _ = _analyse(s)
        assert len(tab["id"]) <= 1, (seed, tab)


def test_calibrated_sigma_on_a_no_seed_series():
    """The per-frame differential is unit-variance noise everywhere (measured noise model),
    including the band edge and particle rims under drift."""
    s = make(1022, n_seeds=0, speck_rate=0.0, n_frames=30, shape=(384, 384))
    la = LiveAnalyzer()
    zs = [r.differential for r in (la.feed(f, t) for f, t in zip(s.frames, s.times)) if r.differential is not None]
    z = np.array(zs[8:])[:, 24:-24, 24:-24]
    assert 0.9 < float(np.std(z)) < 1.1
    g2 = la._imager._grad[2][24:-24, 24:-24]
    edge = g2 > np.percentile(g2, 99)
    assert 0.8 < float(np.std(z[:, edge])) < 1.25
    # Gaussian tails: |z| > 4.5 about as often as for a normal variable (6.8e-6), not 10x more
    assert np.mean(np.abs(z) > 4.5) < 4e-5


def test_evidence_accumulates_and_a_speck_does_not():
    """A constant change of 2 σ a frame builds up over frames; a 50 σ one-frame speck stays
    below 5 σ; the onset of the change is dated to its first frame."""
    rng = np.random.default_rng(3)
    ev = EvidenceAccumulator((64, 64), scales=(0.0,), lags=(1, 2, 4, 8))
    peaks, speck = [], []
    for k in range(13):
        z = rng.normal(0, 1, (64, 64)).astype(np.float32)
        if k >= 6:
            z[19:22, 19:22] += 2.0
        if k == 8:
            z[45, 45] += 50
        t = ev.push(z)
        peaks.append(t[20, 20])
        speck.append(abs(t[45, 45]))
    # 7 frames of 2 σ: the window sums reach 2·√4 = 4 σ and 14/√8 = 4.9 σ (± 1), well above one frame
    assert peaks[-1] > 3.0 and peaks[-1] > peaks[6] + 1.0
    assert max(speck) < 5.0
    assert ev.onset(20, 20, 1) in (5, 6, 7)   # frames back from the newest (12): frame 7, 6 or 5


@pytest.mark.slow
@pytest.mark.parametrize("which", ["tune", "held_out"])
def test_whole_family(which):
    seeds = TUNE_SEEDS if which == "tune" else HELD_OUT_SEEDS
    _check_family([_analyse(make(sd))[2] for sd in seeds])
