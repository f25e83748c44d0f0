"""`insitu export` and HyperSpy reading the session file (issue 9)."""
from __future__ import annotations

import numpy as np
import pytest

from insitu.cli import main
from insitu.core.records import FrameRecord
from insitu.core.session import SessionWriter

hs = pytest.importorskip("hyperspy.api")
pytestmark = pytest.mark.filterwarnings("ignore")

TIMES = [0.0, 0.5, 1.7, 2.0]  # uneven on purpose


@pytest.fixture
def session(tmp_path):
    p = tmp_path / "run.h5"
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 1000, (6, 9)).astype(np.uint16) for _ in TIMES]
    with SessionWriter(p, start_time_iso="2026-03-01T10:00:00+01:00", protocol_text="name: exp1\n") as w:
        for i, t in enumerate(TIMES):
            w.write(FrameRecord(t, frames[i], 2.0 * i, 1e-9 * i, i == 3, 10.0 * i, 2.5e-9))
    return p, frames


def test_hspy_export_calibrated_nonuniform(session, tmp_path):
    p, frames = session
    out = tmp_path / "run.hspy"
    assert main(["export", str(p), "--to", "hspy", "--out", str(out)]) == 0
    sig = hs.load(out)
    assert isinstance(sig, hs.signals.Signal2D) and sig.data.shape == (4, 6, 9)
    t_axis = sig.axes_manager.navigation_axes[0]
    assert not t_axis.is_uniform and t_axis.units == "s"
    np.testing.assert_allclose(t_axis.axis, TIMES)
    for ax in sig.axes_manager.signal_axes:
        assert ax.units == "nm" and ax.scale == pytest.approx(2.5)
    np.testing.assert_array_equal(sig.data, np.stack(frames))
    f = sig.metadata.Insitu.frames
    np.testing.assert_allclose(f.bias, [0, 2, 4, 6]) and np.testing.assert_allclose(f.current, [0, 1e-9, 2e-9, 3e-9])
    np.testing.assert_allclose(f.time, TIMES)
    assert list(f.blanked) == [False, False, False, True]
    assert sig.metadata.General.title == "exp1" and sig.metadata.Insitu.session.status == "complete"
    assert main(["export", str(p), "--to", "hspy", "--out", str(out)]) == 1  # exists
    assert main(["export", str(p), "--to", "hspy", "--out", str(out), "--overwrite"]) == 0


def test_zspy_and_tiff_exports(session, tmp_path):
    p, frames = session
    assert main(["export", str(p), "--to", "zspy", "--out", str(tmp_path / "run")]) == 0
    z = hs.load(tmp_path / "run.zspy")
    np.testing.assert_allclose(z.axes_manager.navigation_axes[0].axis, TIMES)
    np.testing.assert_array_equal(z.data, np.stack(frames))
    assert main(["export", str(p), "--to", "tiff", "--out", str(tmp_path / "run.tif")]) == 0
    t = hs.load(tmp_path / "run.tif")
    assert t.data.shape == (4, 6, 9) and t.axes_manager.signal_axes[0].scale == pytest.approx(2.5, rel=1e-6)
    table = np.genfromtxt(tmp_path / "run.tif.frames.csv", delimiter=",", names=True)
    np.testing.assert_allclose(table["time_s"], TIMES)  # the true times survive next to the TIFF
    np.testing.assert_allclose(table["bias_V"], [0, 2, 4, 6])


def test_uniform_times_give_uniform_axis(tmp_path):
    p = tmp_path / "u.h5"
    with SessionWriter(p, start_time_iso="2026-03-01T10:00:00+01:00") as w:
        for i in range(3):
            w.write(FrameRecord(1.0 + 0.25 * i, np.zeros((4, 4), np.float32), 0, 0, False, 0, 1e-9))
    from insitu.core.export import session_to_signal

    sig = session_to_signal(p)
    ax = sig.axes_manager.navigation_axes[0]
    assert ax.is_uniform and ax.scale == pytest.approx(0.25) and ax.offset == pytest.approx(1.0)


@pytest.mark.real_data
def test_imported_real_series_opens_in_hyperspy(real_data, tmp_path):
    out = tmp_path / "si.h5"
    assert main(["import", str(real_data / "EMDReader_SpectrumImage_Si.emd"), "--out", str(out)]) == 0
    sig = hs.load(out, file_format="NeXus", nxdata_only=True)  # the session file itself
    assert sig.axes_manager.signal_dimension == 2 and sig.data.shape == (5, 16, 16)
    assert sig.axes_manager.signal_axes[0].scale == pytest.approx(5.302415e-9, rel=1e-6)
    assert sig.axes_manager.navigation_axes[0].scale == pytest.approx(0.0416)
    assert main(["export", str(out), "--to", "hspy", "--out", str(tmp_path / "si.hspy")]) == 0
    e = hs.load(tmp_path / "si.hspy")
    assert e.data.shape == (5, 16, 16) and e.axes_manager["x"].scale == pytest.approx(5.302415, rel=1e-6)
    assert e.axes_manager["x"].units == "nm" and e.metadata.Acquisition_instrument.TEM.beam_energy == 200


def test_export_refuses_frameless_session(tmp_path, capsys):
    p = tmp_path / "empty.h5"
    SessionWriter(p, start_time_iso="2026-03-01T10:00:00+01:00").close()
    assert main(["export", str(p), "--to", "hspy", "--out", str(tmp_path / "e.hspy")]) == 1
    assert "no frames" in capsys.readouterr().err


def test_large_sessions_export_lazily(session, tmp_path, monkeypatch):
    import insitu.core.export as ex

    p, frames = session
    monkeypatch.setattr(ex, "LAZY_ABOVE_BYTES", 0)  # every session counts as large
    seen = {}
    real = ex.session_to_signal

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(ex, "session_to_signal", spy)
    ex.export_session(p, "hspy", tmp_path / "lazy.hspy")
    assert seen["lazy"] is True
    back = hs.load(tmp_path / "lazy.hspy")
    np.testing.assert_array_equal(back.data, np.stack(frames))
    np.testing.assert_allclose(back.axes_manager.navigation_axes[0].axis, TIMES)
