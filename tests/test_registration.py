"""Drift measurement: known shifts on a real HAADF frame and on synthetic series."""
from __future__ import annotations

import numpy as np
import pytest

from insitu.analysis.image.differential import ShiftSmoother, remove_row_offsets, valid_slices
from insitu.analysis.pipeline import LiveAnalyzer
from insitu.analysis.image.registration import PhaseCorrelator, fourier_shift, phase_shift
from seriesgen import make_series


@pytest.fixture
def real_frame(real_data):
    rsciio_emd = pytest.importorskip("rsciio.emd")
    sig = rsciio_emd.file_reader(str(real_data / "fei_emd_image.emd"))[0]
    img = np.asarray(sig["data"], float)
    assert img.shape == (512, 512)
    return img


SHIFTS = [(0.25, -0.5), (3.7, 1.3), (-5.45, 2.05), (0.0, 0.0), (-0.33, -7.8), (10.1, -0.9)]


@pytest.mark.parametrize("dx,dy", SHIFTS)
def test_real_frame_known_subpixel_shift(real_frame, dx, dy):
    moved = fourier_shift(real_frame, dx, dy)
    ex, ey = phase_shift(real_frame, moved)
    assert abs(ex - dx) <= 0.1 and abs(ey - dy) <= 0.1, (ex, ey)


def test_real_frame_with_noise_and_brightness_change(real_frame):
    """Poisson noise on both frames, 30 % darker and an offset: still within 0.1 px."""
    rng = np.random.default_rng(3)
    scale = 200.0 / real_frame.mean()            # ~200 counts per pixel
    ref = rng.poisson(real_frame * scale).astype(float)
    errs = []
    for dx, dy in SHIFTS:
        mov = rng.poisson(np.clip(fourier_shift(real_frame, dx, dy), 0, None) * scale * 0.7).astype(float) + 50
        ex, ey = phase_shift(ref, mov)
        errs.append(max(abs(ex - dx), abs(ey - dy)))
    assert max(errs) <= 0.1, errs


def test_integer_roll_is_found():
    rng = np.random.default_rng(0)
    ref = rng.random((96, 80))
    for sx, sy in [(5, 0), (-3, 7), (0, -11)]:
        mov = np.roll(np.roll(ref, sy, axis=0), sx, axis=1)
        ex, ey = phase_shift(ref, mov)
        assert (ex, ey) == pytest.approx((sx, sy), abs=0.01)


def test_scan_line_noise_does_not_pull_the_shift():
    """Row offsets (different in each frame) are removed before correlating."""
    rng = np.random.default_rng(1)
    base = rng.random((128, 128))
    from scipy import ndimage as ndi

    base = ndi.gaussian_filter(base, 2.0) * 100 + 100
    ref = base + rng.normal(0, 3, (128, 1))
    mov = fourier_shift(base, 1.4, -2.6) + rng.normal(0, 3, (128, 1))
    ex, ey = phase_shift(ref, mov)
    assert abs(ex - 1.4) < 0.05 and abs(ey + 2.6) < 0.05


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        phase_shift(np.zeros((8, 8)), np.zeros((8, 9)))


def test_phase_correlator_matches_function():
    rng = np.random.default_rng(2)
    ref = rng.random((64, 64))
    mov = fourier_shift(ref, -2.2, 0.6)
    pc = PhaseCorrelator(ref.shape)
    assert pc.shift(pc.spectrum(ref), pc.spectrum(mov)) == pytest.approx(phase_shift(ref, mov), abs=1e-9)


def test_shift_smoother_inverts_a_shift():
    """Moving a shifted band-limited image back by the same amount gives the original."""
    rng = np.random.default_rng(4)
    from scipy import ndimage as ndi

    img = ndi.gaussian_filter(rng.random((64, 64)), 2.0, mode="wrap").astype(np.float32)  # periodic, band-limited
    moved = fourier_shift(img, 2.3, -1.7)
    back = ShiftSmoother(img.shape, sigma_px=0).apply(moved, -2.3, 1.7)
    assert np.abs(back - img)[8:-8, 8:-8].max() < 1e-4


def test_valid_slices_and_row_offsets():
    rows, cols = valid_slices((50, 60), -2.5, 4.0, 3)
    # content at p0 comes from p0 + d: rows need p0 + 4 <= 49, columns p0 - 2.5 >= 0
    assert (rows.start, rows.stop, cols.start, cols.stop) == (3, 43, 6, 57)
    d = np.arange(12, dtype=float).reshape(3, 4)
    remove_row_offsets(d)
    assert np.allclose(d.mean(axis=1), 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_live_analyzer_follows_generated_drift(seed):
    s = make_series(n_frames=30, shape=(160, 160), seed=seed)
    la = LiveAnalyzer()
    for f, t in zip(s.frames, s.times):
        la.feed(f, t)
    est = np.array(la.drift)
    err = np.abs(est - s.drift)
    assert est[0].tolist() == [0.0, 0.0]
    # noisy 160² frames with growing seeds and artefacts: typical error a few tenths of a pixel
    assert np.median(err) < 0.25
    assert err.max() < 1.0
    # the drift of several px is followed (not stuck at zero)
    assert np.abs(s.drift).max() > 3
