"""Seed detection on the independent series family (tests/seriesfamily.py, issue 15).

Default run (lean but real): two 512² × 60-frame configurations that hold every hard case of
the Done-when between them (8 % contrast, half dark, six seeds under the electrode band; 15 px
drift, 800-count offset at 100 counts/px, 3 specks a frame), a no-seed series, the regression
case of held-out configuration 1003 (a young reference's error locked in by the freeze; a seed
the drift carries to 8 px of the frame edge), the calibration of σ, and the evidence on its own.
Marked slow: each hard case on its own configuration, the tuning and held-out sets, the
widened family (seeds 2000–2007, reported before/after in docs/analysis.md) and more no-seed
series.
"""
from __future__ import annotations

import numpy as np
import pytest

from insitu.analysis.image.evidence import EvidenceAccumulator
from insitu.analysis.pipeline import LiveAnalyzer
from insitu.analysis.image.seeds import match_seeds
from seriesfamily import HELD_OUT_SEEDS, TUNE_SEEDS, WIDE_SEEDS, draw_config, draw_wide_config, make, render


def _analyse(series):
    la = LiveAnalyzer()
    for f, t in zip(series.frames, series.times):
        la.feed(f, t)
    tab = la.seeds_table()
    return la, tab, match_seeds(tab, series.seeds, radius_px=4.0)


def _check_family(scores, mean_f1=0.95, min_f1=0.85):
    f1 = [sc["f1"] for sc in scores]
    err = [p[2] for sc in scores for p in sc["pairs"]]
    lat = [v for sc in scores for v in sc["latencies"]]
    assert np.mean(f1) >= mean_f1, f1
    assert min(f1) >= min_f1, f1
    assert np.mean(err) <= 1.0, np.mean(err)
    assert np.median(lat) <= 2, lat
    ok = [v for sc in scores for v in sc["sign_ok"]]
    assert np.mean(ok) == 1.0


#: two held-out configurations that hold all the hard cases between them (never used while tuning)
COMBINED = {
    "weak, dark and under the band": dict(seed=1010, contrast=(0.08, 0.085), dark_fraction=0.5, n_band_seeds=6),
    "drift, offset and specks": dict(seed=1013, drift_px=15.0, offset=800.0, counts=100.0, speck_rate=3.0),
}

#: held-out configurations, each pushed to one hard case (slow)
HARD = {
    "8 % contrast": dict(seed=1010, contrast=(0.08, 0.085)),
    "half dark": dict(seed=1011, dark_fraction=0.5),
    "under the band": dict(seed=1012, n_band_seeds=6),
    "15 px drift": dict(seed=1013, drift_px=15.0),
    "800 counts offset, 100 counts": dict(seed=1014, offset=800.0, counts=100.0),
    "3 specks a frame": dict(seed=1015, speck_rate=3.0),
}


def _scores(cases):
    out = {}
    for name, kw in cases.items():
        kw = dict(kw)
        s = render(draw_config(kw.pop("seed"), **kw))
        out[name] = (s, _analyse(s)[2])
    return out


@pytest.fixture(scope="module")
def combined_scores():
    return _scores(COMBINED)


def test_hard_cases_of_the_family(combined_scores):
    """F1, position error and latency over the hard conditions (the Done-when of issue 15)."""
    _check_family([sc for _, sc in combined_scores.values()])


def _weak_dark_band_found(s, sc):
    found = {j for _, j, _ in sc["pairs"]}
    dark = np.flatnonzero(s.seeds["sign"] < 0)
    band = np.flatnonzero(s.seeds["at_band"])
    return dark, band, found


def test_weak_dark_and_band_seeds_are_found(combined_scores):
    s, sc = combined_scores["weak, dark and under the band"]
    dark, band, found = _weak_dark_band_found(s, sc)
    assert s.seeds["contrast"].max() <= 0.085
    assert len(dark) >= 3 and set(dark) <= found
    assert len(band) >= 5 and set(band) <= found
    assert sc["fn"] == 0


def test_no_seed_series_gives_at_most_one_false_seed():
    """The threshold's promise: at the default, at most 1 false seed per 60-frame 512² series
    (band edge, GBs and particle rims under 12 px of drift, specks, decay, offset)."""
    s = make(1020, n_seeds=0, drift_px=12.0, speck_rate=2.0)
    _, tab, _ = _analyse(s)
    assert len(tab["id"]) <= 1, tab


def test_frozen_young_reference_and_seed_near_the_frame_edge():
    """Held-out configuration 1003, which the detector failed (F1 0.84) before:

    * a 4 σ noise excursion of frames 7–13 against a reference of 7 frames froze the reference
      there (evidence > 4 σ), and the window sums, normalised by the spread of pixels whose
      reference kept averaging, grew to 7.5 σ: a false seed in the vacuum. Now a frozen pixel's
      sums are normalised by at least the spread its own reference's error implies.
    * a seed at x = 14.7 px that the drift carries to 8 px of the frame edge fell in the 4 px
      border kept clear inside the drift-corrected region (now 2 px).
    """
    s = make(1003)
    _, tab, sc = _analyse(s)
    assert sc["fp"] == 0, tab
    edge = int(np.argmin(s.seeds["x_px"]))
    assert s.seeds["x_px"][edge] < 15 and s.drift[:, 0].min() < -11
    assert edge in {j for _, j, _ in sc["pairs"]}


def test_columns_the_drift_carried_out_over_the_restart_keep_their_row_level():
    """Widened configuration 2001 (2 px scan shear, scan-line noise 7 % of the signal), which gave 7
    false seeds at x = 500 before (F1 0.71): its right columns were seen in the first frames, then
    carried out of view before the 5th frame, when the reference of the pixels in view became the
    median of 5 frames. That changed each row's level by the median of its scan-line offsets; the
    columns outside kept the old level, came back 10 σ off their row, were outliers, so never
    corrected. They now move with their row."""
    s = render(draw_wide_config(2001))
    assert s.drift[4:10, 0].min() > 5                  # frames 5-10: x = 499-504 out of view
    la, tab, sc = _analyse(s)
    false = [i for i in range(len(tab["id"])) if i not in {p for p, _, _ in sc["pairs"]}]
    assert not (tab["x_px"][false] > 490).any(), tab
    assert sc["fp"] <= 1 and sc["f1"] >= 0.9
    assert la._imager._from_start[100:400, 499:503].all()     # seen in the first 3 frames


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


def test_a_frozen_reference_error_is_normalised_by_its_own_spread():
    """Every frame shares one reference error e (σ_e² = 1/7 of a frame's variance, as for a
    reference of 7 frames). Where the reference is known to be frozen (``ref_var``), a window
    sum of L frames is divided by at least √(L + L²/7) frame spreads, so the evidence there has
    the spread of the rest of the image; without it they reach 3x that spread far more often."""
    rng = np.random.default_rng(5)
    shape = (256, 256)
    frozen = rng.random(shape) < 0.25             # a quarter of the pixels, spread over the image
    e = np.where(frozen, rng.normal(0, np.sqrt(1 / 7), shape), 0.0).astype(np.float32)
    rv = np.where(frozen, np.float32(1 / 7), np.float32(0))
    with_rv = EvidenceAccumulator(shape, scales=(0.0,), lags=(1, 2, 4, 8))
    without = EvidenceAccumulator(shape, scales=(0.0,), lags=(1, 2, 4, 8))
    for k in range(12):
        z = rng.normal(0, 1, shape).astype(np.float32) + e
        a = with_rv.push(z, exclude=frozen, ref_var=rv)
        b = without.push(z, exclude=frozen)
    ref = float(np.std(a[~frozen]))                        # calibrated: no reference error there
    assert 0.9 * ref < float(np.std(a[frozen])) < 1.1 * ref
    assert float(np.std(b[frozen])) > 1.15 * ref
    # the tails, where false seeds come from: beyond 3x the calibrated spread
    assert np.mean(np.abs(b[frozen]) > 3 * ref) > 0.002 > 4 * np.mean(np.abs(a[frozen]) > 3 * ref)
    assert np.array_equal(a[~frozen], b[~frozen])          # elsewhere nothing changes


def test_feed_reports_each_confirmed_seed_once_with_its_frames():
    """The incremental API of issue 20: ``new_seeds`` of each frame are the seeds confirmed by that
    frame, each once, with id, position, first frame and confirmation frame."""
    s = render(draw_config(1016, shape=(256, 256), n_frames=40))
    la = LiveAnalyzer()
    seen = {}
    for k, (f, t) in enumerate(zip(s.frames, s.times)):
        r = la.feed(f, t)
        for sd in r.new_seeds:
            assert sd.id not in seen and sd.confirmed_frame == k
            assert sd.first_frame <= k and np.isfinite(sd.x_px) and np.isfinite(sd.y_px)
            seen[sd.id] = k
        assert [sd.id for sd in r.seeds] == sorted(seen)
    assert sorted(seen) == list(range(1, len(seen) + 1)) and len(seen) >= 3
    tab = la.seeds_table()
    assert tab["id"].tolist() == sorted(seen)
    assert match_seeds(tab, s.seeds, 4.0)["tp"] >= len(seen) - 1


@pytest.mark.slow
def test_each_hard_case_on_its_own():
    scores = _scores(HARD)
    _check_family([sc for _, sc in scores.values()])
    for name in ("8 % contrast", "half dark", "under the band"):
        s, sc = scores[name]
        dark, band, found = _weak_dark_band_found(s, sc)
        if name == "half dark":
            assert len(dark) >= 3 and set(dark) <= found, name
        elif name == "under the band":
            assert len(band) >= 5 and set(band) <= found, name
        else:
            assert sc["fn"] == 0, name


@pytest.mark.slow
@pytest.mark.parametrize("which", ["tune", "held_out"])
def test_whole_family(which):
    seeds = TUNE_SEEDS if which == "tune" else HELD_OUT_SEEDS
    _check_family([_analyse(make(sd))[2] for sd in seeds])


@pytest.mark.slow
def test_widened_family():
    """The widened family (never tuned on): measured mean F1 and position error, and no series below
    the floor that docs/analysis.md reports (scan distortion and low dose are its hard parts)."""
    scores = [_analyse(make(sd))[2] for sd in WIDE_SEEDS]
    f1 = [sc["f1"] for sc in scores]
    assert np.mean(f1) >= 0.85 and min(f1) >= 0.75, f1


@pytest.mark.slow
def test_more_no_seed_series():
    series = [make(seed, n_seeds=0, drift_px=12.0, speck_rate=2.0) for seed in (1021, 1023)]
    series += [render(draw_wide_config(seed, n_seeds=0)) for seed in (2020, 2021)]   # widened family
    for s in series:
        _, tab, _ = _analyse(s)
        assert len(tab["id"]) <= 1, (s.config["seed"], tab)


def test_first_valid_column_next_to_never_seen_pixels_is_calibrated():
    """Widened configuration 4013: from frame 29 the drift brings the valid region back to the
    edge of the region the reference has ever seen (x = 7; x < 7 never seen). There the shift
    terms used a central difference against the unseen 0 (the whole reference level per 2 px):
    z spread 20 σ over that column, in vacuum; and the column's new reference kept the scan-line
    offsets of the frames it started from (spread 2.7 σ). Both gone: unit spread."""
    s = render(draw_wide_config(4013))
    la = LiveAnalyzer()
    z = None
    for f, t in list(zip(s.frames, s.times))[:41]:
        z = la.feed(f, t).differential
    im = la._imager
    x0 = im.last_valid[1].start
    assert x0 == 7 and not im.seen[:, x0 - 1].any() and im.seen[100:400, x0].all()
    col = np.asarray(z)[40:470, x0]
    assert np.std(col) < 1.3, np.std(col)


def test_seen_gradient_is_one_sided_at_the_edge_of_the_seen_region():
    from insitu.analysis.image.differential import _seen_gradient

    rng = np.random.default_rng(0)
    r = rng.normal(size=(9, 11)).astype(np.float32)
    for axis in (0, 1):
        np.testing.assert_array_equal(_seen_gradient(r, np.ones(r.shape, bool), axis), np.gradient(r, axis=axis))
    seen = np.ones(r.shape, bool)
    seen[:, :3] = False
    seen[:, 8] = False                          # an unseen column inside
    r[~seen] = 0.0
    g = _seen_gradient(r, seen, 1)
    np.testing.assert_allclose(g[:, 3], r[:, 4] - r[:, 3], rtol=1e-6)        # one-sided, forwards
    np.testing.assert_allclose(g[:, 7], r[:, 7] - r[:, 6], rtol=1e-6)        # one-sided, backwards
    np.testing.assert_allclose(g[:, 5], (r[:, 6] - r[:, 4]) / 2, rtol=1e-6)  # central inside
    assert not g[:, :3].any() and not g[:, 8].any()
    np.testing.assert_allclose(g[:, 9], r[:, 10] - r[:, 9], rtol=1e-6)
    np.testing.assert_array_equal(_seen_gradient(r, seen, 0)[:, 5], np.gradient(r, axis=0)[:, 5])
