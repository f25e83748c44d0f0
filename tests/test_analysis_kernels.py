"""The compiled kernels of the live analysis against independent numpy/scipy computations, and
results that do not depend on the number of threads (issue 15, speed)."""
from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy import ndimage as ndi

from insitu.analysis.image.differential import remove_row_offsets
from insitu.analysis.image.evidence import _abs_median, robust_sigma
from insitu.analysis.image.seeds import find_candidates
from insitu.analysis.pipeline import LiveAnalyzer
from seriesgen import make_series


def _candidates_by_labels(z, threshold, low):
    """Blobs the way the detector found them before (labelled image, np.bincount moments)."""
    az = np.abs(z)
    lab, n = ndi.label(az > low)
    sel = np.unique(lab[az > threshold])
    sel = sel[sel > 0]
    w = np.where(lab > 0, az - np.float32(low), 0).astype(np.float64).ravel()
    yy, xx = np.indices(z.shape)
    lb = lab.ravel()
    sw = np.bincount(lb, w, n + 1)
    sx = np.bincount(lb, w * xx.ravel(), n + 1)
    sy = np.bincount(lb, w * yy.ravel(), n + 1)
    area = np.bincount(lb, minlength=n + 1)
    peak = ndi.maximum(az, lab, np.arange(n + 1))
    out = [(sx[i] / sw[i], sy[i] / sw[i], int(area[i]), float(peak[i])) for i in sel]
    return sorted(out, key=lambda c: -c[3])


def test_find_candidates_matches_labelled_image_moments():
    rng = np.random.default_rng(3)
    n = 0
    for k in range(30):
        ny, nx = rng.integers(8, 90, 2)
        z = ndi.gaussian_filter(rng.normal(0, 1, (ny, nx)), rng.uniform(0.6, 2.0)).astype(np.float32)
        z *= np.float32(rng.uniform(1.5, 3.0) / z.std())
        got = find_candidates(z, threshold=4.0, low=2.0)
        ref = _candidates_by_labels(z, 4.0, 2.0)
        assert len(got) == len(ref)
        for c, (x, y, area, peak) in zip(got, ref):
            assert c.area == area and c.peak == pytest.approx(peak, abs=1e-6)
            assert c.x == pytest.approx(x, abs=1e-9) and c.y == pytest.approx(y, abs=1e-9)
        n += len(got)
    assert n > 30      # the images did hold blobs


def test_row_offsets_match_numpy_clipped_means():
    rng = np.random.default_rng(4)
    d = (rng.normal(0, 1, (64, 80)) + rng.normal(0, 5, (64, 1))).astype(np.float32)
    d[10, 5:9] += 40            # a streak in a row
    exclude = rng.random(d.shape) < 0.1
    for ex in (None, exclude):
        w = np.ones(d.shape, np.float32) if ex is None else (~ex).astype(np.float32)
        n = np.maximum(w.sum(axis=1, keepdims=True), 1)
        ref = d.astype(np.float64)
        ref = ref - (np.clip(ref, -12, 12) * w).sum(axis=1, keepdims=True) / n
        ref = ref - (np.clip(ref, -3, 3) * w).sum(axis=1, keepdims=True) / n
        got = remove_row_offsets(d.copy(), clip=3.0, exclude=ex)
        assert np.abs(got - ref).max() < 1e-4
        # and the float32 numpy steps bit for bit (the kernel sums in numpy's pairwise order)
        d32 = d.copy()
        w32 = w.astype(np.float32)
        d32 -= (np.clip(d32, -12.0, 12.0) * w32).sum(axis=1, keepdims=True) / n.astype(np.float32)
        d32 -= (np.clip(d32, -3.0, 3.0) * w32).sum(axis=1, keepdims=True) / n.astype(np.float32)
        assert np.array_equal(got, d32)


def test_abs_median_is_robust_sigma_of_the_subsample():
    rng = np.random.default_rng(5)
    for k in range(60):
        ny, nx = rng.integers(1, 50, 2)
        a = np.round(rng.normal(0, 2, (ny, nx)) * (k % 2 + 1)).astype(np.float32)  # ties and zeros
        m = rng.random(((ny + 3) // 4, (nx + 3) // 4)) < 0.7
        v = a[::4, ::4][m]
        n_in, med = _abs_median(a, m, True, np.empty(m.size, np.float32))
        assert n_in == v.size
        assert (1.4826 * float(med) if med > 0 else 0.0) == robust_sigma(v[v != 0])


def _run(frames, threads, workers):
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        la = LiveAnalyzer(workers=workers)
        for k, f in enumerate(frames):
            r = la.feed(f, float(k))
        return la.seeds_table(), la.drift, r.differential_raw, r.evidence_raw
    finally:
        numba.set_num_threads(old)


def test_results_do_not_depend_on_the_number_of_threads():
    most = numba.config.NUMBA_NUM_THREADS
    if most < 2:
        pytest.skip("numba has one thread here (NUMBA_NUM_THREADS=1)")
    s = make_series(n_frames=12, shape=(768, 768), seed=2, drift_px=5.0)   # working grid step 2
    t1, d1, z1, e1 = _run(s.frames, 1, 1)
    t2, d2, z2, e2 = _run(s.frames, min(most, 4), 2)
    assert d1 == d2
    assert np.array_equal(z1, z2) and np.array_equal(e1, e2)
    assert np.abs(e1).max() > 0
    for c in t1:
        assert np.array_equal(t1[c], t2[c])


def _local_maxima_numpy(a, where, r):
    """The numpy formulation the compiled local-maximum pass replaced (24 gathers for r = 2)."""
    ys, xs = np.nonzero(where)
    v = a[ys, xs]
    keep = np.ones(len(ys), bool)
    ny, nx = a.shape
    for dy in range(-r, r + 1):
        yy = np.clip(ys + dy, 0, ny - 1)
        for dx in range(-r, r + 1):
            if dy or dx:
                keep &= a[yy, np.clip(xs + dx, 0, nx - 1)] <= v
    return ys[keep], xs[keep]


def test_local_maxima_match_the_numpy_formulation():
    """Ties, NaNs, edges, sparse and dense masks, float32 and float64: the same pixels in the same order."""
    from insitu.analysis.image.seeds import _local_maxima

    rng = np.random.default_rng(0)
    for t in range(120):
        shape = tuple(int(v) for v in rng.integers(1, 40, 2))
        a = rng.normal(size=shape).astype(np.float32 if t % 2 else np.float64)
        if t % 3 == 0:
            a = np.round(a, 1)
        if t % 7 == 0:
            a[rng.random(shape) < 0.05] = np.nan
        where = rng.random(shape) < rng.uniform(0.05, 1)
        r = int(rng.integers(1, 4))
        for got, ref in zip(_local_maxima(a, where, r), _local_maxima_numpy(a, where, r)):
            np.testing.assert_array_equal(got, ref)


def test_level_bias_interpolation_matches_numpy():
    """d -= float32(np.interp(r, xp, fp)), on a strided slice as the imager passes it, knots hit exactly."""
    from insitu.analysis.image.differential import _sub_interp

    rng = np.random.default_rng(1)
    r = rng.uniform(-10, 110, (80, 90)).astype(np.float32)
    xp = np.sort(rng.uniform(0, 100, 24))
    r[7, 5:29] = xp.astype(np.float32)
    fp = rng.normal(size=24)
    d = rng.normal(size=(80, 90)).astype(np.float32)
    ref = d[5:70, 3:80].copy()
    ref -= np.interp(r[5:70, 3:80], xp, fp).astype(np.float32)
    _sub_interp(d[5:70, 3:80], r[5:70, 3:80], xp, fp)
    np.testing.assert_array_equal(d[5:70, 3:80], ref)


def test_level_sums_match_bincount():
    """Per level bin: count, sum of d clipped at ± 3 s (float32) and sum of s, as the masked
    selection, np.clip, searchsorted and np.bincount the compiled pass replaced give them."""
    from insitu.analysis.image.differential import _level_sums

    rng = np.random.default_rng(2)
    big = rng.normal(0, 2, (90, 100)).astype(np.float32)
    ref = rng.uniform(0, 50, (90, 100)).astype(np.float32)
    sd = rng.uniform(0.5, 2, (90, 100)).astype(np.float32)
    d, r, s = big[::2, ::2], ref[::2, ::2], sd[::2, ::2]          # strided, as the imager passes them
    ok = rng.random(r.shape) < 0.8
    edges = np.unique(np.r_[np.percentile(r, np.linspace(0, 100, 11)), np.linspace(r.min(), r.max(), 11)])
    r[0, :3] = edges[:3]                                           # values on the edges themselves
    nl = len(edges) - 1
    n, sx, ss = _level_sums(d, r, s, ok, edges, nl)
    sk = s[ok]
    x = np.clip(d[ok], -3.0 * sk, 3.0 * sk)
    idx = np.clip(np.searchsorted(edges, r[ok], "right") - 1, 0, nl - 1)
    np.testing.assert_array_equal(n, np.bincount(idx, minlength=nl))
    np.testing.assert_array_equal(sx, np.bincount(idx, weights=x, minlength=nl))
    np.testing.assert_array_equal(ss, np.bincount(idx, weights=sk, minlength=nl))
