"""Real microscope files in (issue 9): readers, bias-log alignment, `insitu import`."""
from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest

from insitu.core.biaslog import align_bias_log, interpolate_at, read_bias_log
from insitu.cli import main
from insitu.core.errors import UserError
from insitu.core.readers import read_frames
from insitu.core.session import open_session

pytestmark = [pytest.mark.real_data, pytest.mark.filterwarnings("ignore")]


def test_velox_si_haadf_series(real_data):
    st = read_frames(real_data / "EMDReader_SpectrumImage_Si.emd")
    assert st.frames.shape == (5, 16, 16) and st.frames.dtype == np.uint16
    assert st.pixel_size_m == pytest.approx(5.302415e-9, rel=1e-6)
    np.testing.assert_allclose(st.times_s, np.arange(5) * 0.0416, atol=1e-9)  # frame time 41.6 ms
    assert st.meta["detector"] == "HAADF" and st.meta["ht_V"] == 200e3 and st.meta["dwell_s"] == pytest.approx(50e-6)
    assert st.meta["frame_time_s"] == pytest.approx(0.0416)
    means = st.frames.reshape(5, -1).mean(axis=1)
    assert 13200 < means.min() < means.max() < 13300 and len(set(means)) == 5  # README: 5 different frames


def test_velox_single_images(real_data):
    st = read_frames(real_data / "fei_emd_image.emd")
    assert st.frames.shape == (1, 512, 512) and st.times_s.tolist() == [0.0]
    assert st.pixel_size_m == pytest.approx(5.3024148e-9, rel=1e-7)
    assert st.frames.min() == 9133 and st.frames.max() == 29036
    assert st.start_epoch_s == 1488794201
    assert st.meta["frame_time_s"] == pytest.approx(6.04, abs=0.01) and st.meta["dwell_s"] == pytest.approx(20e-6)
    micro = read_frames(real_data / "STEM HAADF Diffraction Micro.emd")
    assert micro.frames.shape == (1, 128, 128) and micro.pixel_size_m == pytest.approx(87.3708e-9, rel=1e-6)
    assert micro.meta["ht_V"] == 300e3 and micro.meta["frame_time_s"] == pytest.approx(0.247, abs=1e-3)


def test_velox_camera_stack_uses_detector_time_stamps(real_data):
    st = read_frames(real_data / "fei_example_tem_stack.emd")
    assert st.frames.shape == (2, 3, 3) and st.frames.dtype == np.int16
    assert sorted(st.frames.ravel().tolist()) == list(range(18))  # README: a synthetic ramp 0..17
    assert st.times_s[1] == pytest.approx(0.8, abs=1e-3) and st.meta["time_source"] == "detector time stamps"
    assert st.pixel_size_m == pytest.approx(8.1729e-12, rel=1e-4) and st.meta["detector"] == "BM-Ceta"


def test_velox_v11_haadf_stack_among_other_signals(real_data, tmp_path):
    with zipfile.ZipFile(real_data / "velox_emd_version11.zip") as z:
        z.extractall(tmp_path)
    st = read_frames(tmp_path / "Test SI 16x16 215 kx.emd")
    assert st.frames.shape == (2, 16, 16) and st.meta["detector"] == "HAADF"
    assert st.pixel_size_m == pytest.approx(3.59925e-9, rel=1e-5)
    np.testing.assert_allclose(st.times_s, [0, 0.288])
    with pytest.raises(UserError, match="no images from detector 'BF'"):
        read_frames(tmp_path / "Test SI 16x16 215 kx.emd", detector="BF")


def test_dm_stack_without_time_calibration(real_data):
    st = read_frames(real_data / "test_stackbuilder_imagestack.dm3")
    assert st.frames.shape == (3, 2, 16) and st.frames.dtype == np.uint32
    assert st.pixel_size_m == pytest.approx(0.059983e-6, rel=1e-5)
    assert not np.array_equal(st.frames[0], st.frames[1])
    assert st.times_s.tolist() == [0.0, 1.0, 2.0] and "none in file" in st.meta["time_source"]
    assert st.meta["ht_V"] == 200e3
    given = read_frames(real_data / "test_stackbuilder_imagestack.dm3", frame_interval_s=0.25)
    assert given.times_s.tolist() == [0.0, 0.25, 0.5]


def test_dm4_axis_order_and_calibration(real_data):
    st = read_frames(real_data / "dmTest_3D_int16_64,65,66.dm4")
    assert st.frames.shape == (66, 65, 64)
    assert st.pixel_size_m == pytest.approx(2e-12) and st.meta["pixel_size_y_m"] == pytest.approx(3e-9)
    assert "none in file" in st.meta["time_source"]  # the z axis is in µm, not a time


def test_dm_single_image(real_data):
    st = read_frames(real_data / "test_STEM_image.dm3")
    assert st.frames.shape == (1, 68, 68) and st.pixel_size_m == pytest.approx(0.248538e-9, rel=1e-5)
    assert st.meta["dwell_s"] == pytest.approx(3.5e-6)


def test_tiff_stacks_dm_and_imagej(real_data):
    dm = read_frames(real_data / "test_loading_image_saved_with_DM_stack.tif")
    assert dm.frames.shape == (2, 68, 68) and dm.frames.dtype == np.float32
    np.testing.assert_allclose(dm.times_s, [0.0, 2.5])  # 2.5 s per frame
    assert dm.pixel_size_m == pytest.approx(0.168674e-6, rel=1e-5)
    assert dm.meta["pixel_size_y_m"] == pytest.approx(10 * dm.pixel_size_m, rel=1e-5)  # README: y scale 10× x
    ij = read_frames(real_data / "test_loading_image_saved_with_imageJ_stack.tif")
    assert ij.frames.shape == (2, 68, 68)
    assert ij.pixel_size_m == pytest.approx(0.16867e-6, rel=1e-4)
    np.testing.assert_allclose(ij.times_s, [0.0, 2.5])
    np.testing.assert_array_equal(ij.frames[0], ij.frames[1])  # README: identical frames


def test_folder_of_files_joined_by_time_and_shape_mismatch(real_data, tmp_path):
    import shutil

    for name in ("test_loading_image_saved_with_DM_stack.tif", "test_loading_image_saved_with_imageJ_stack.tif"):
        shutil.copy(real_data / name, tmp_path / name)
    st = read_frames(tmp_path)
    assert st.frames.shape == (4, 68, 68) and np.all(np.diff(st.times_s) > 0)
    shutil.copy(real_data / "fei_emd_image.emd", tmp_path / "big.emd")
    with pytest.raises(UserError, match=r"different shapes.*512×512"):
        read_frames(tmp_path)


def test_protochips_log_in_si(real_data):
    log = read_bias_log(real_data / "protochips_electrical.csv")
    assert 150 <= len(log) <= 163
    assert log.time_s[0] == 0 and log.time_s[-1] == pytest.approx(15.276)
    assert log.voltage_V.max() == pytest.approx(40.0917) and log.current_A.max() == pytest.approx(0.0179995)
    high = log.voltage_V > 30
    r = log.voltage_V[high] / log.current_A[high]
    assert np.all((r > 2.1e3) & (r < 2.3e3))  # ≈2.2 kΩ pulses, so V and A are both in SI
    from datetime import datetime

    assert log.start_epoch_s == pytest.approx(datetime(2014, 10, 8, 16, 26, 51, 738000).timestamp())
    with pytest.raises(UserError, match="no channel 'C'"):
        read_bias_log(real_data / "protochips_electrical.csv", channel="C")


def test_plain_bias_csv_alignment(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("# start_time: 2026-03-01T09:59:52+00:00\ntime_s,voltage_V,current_A\n"
                 "10,0,0\n11,1,1e-9\n12,2,2e-9\n")
    log = read_bias_log(p)
    from datetime import datetime

    frames_epoch = datetime.fromisoformat("2026-03-01T10:00:00+00:00").timestamp()
    t = align_bias_log(log, np.array([0.0, 5.0]), frames_epoch)
    np.testing.assert_allclose(t, [2.0, 3.0, 4.0])
    np.testing.assert_allclose(interpolate_at([2.5, 3.5, 9.0], t, log.voltage_V), [0.5, 1.5, np.nan])
    bad = tmp_path / "bad.csv"
    bad.write_text("t,v\n1,2\n")
    with pytest.raises(UserError, match="not a bias log"):
        read_bias_log(bad)


def test_import_protochips_against_velox_image(real_data, tmp_path, capsys):
    out = tmp_path / "s.h5"
    args = ["import", str(real_data / "fei_emd_image.emd"), "--out", str(out),
            "--bias-log", str(real_data / "protochips_electrical.csv")]
    assert main(args) == 1  # 2014 log, 2017 image: the clocks do not overlap
    err = capsys.readouterr().err
    assert "do not overlap" in err and "--bias-offset-s" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(args + ["--bias-offset-s", "-5.0"]) == 0
    s = open_session(out)
    assert 150 <= len(s.bias["time"]) <= 163 and s.status == "complete"
    assert s.bias["time"][0] == pytest.approx(-5.0)
    assert s.bias["voltage"].max() == pytest.approx(40.0917) and s.bias["current"].max() < 0.02
    log = read_bias_log(real_data / "protochips_electrical.csv")
    # the frame at t=0 is 5 s into the log: its bias is the log interpolated there
    assert s.frame_table["bias"][0] == pytest.approx(np.interp(5.0, log.time_s, log.voltage_V))
    assert s.frame_table["current"][0] == pytest.approx(np.interp(5.0, log.time_s, log.current_A))
    assert s.n_frames == 1 and s.frame_shape == (512, 512) and s.pixel_size_m == pytest.approx(5.3024148e-9)
    assert s.start_time.startswith("2017-03-06") or s.start_time.startswith("2017-03-05")
    assert main(args + ["--bias-offset-s", "0"]) == 1  # exists: refused
    assert "overwrite" in capsys.readouterr().err
    s.close()
    from filetools import assert_hyperspy_opens

    assert len(s.events) >= 2  # text columns of two or more rows: what HyperSpy's reader refused before
    assert_hyperspy_opens(out, n_frames=1)  # an imported session (frames + bias log) opens in HyperSpy


def test_import_series_session_layout(real_data, tmp_path):
    out = tmp_path / "series.h5"
    assert main(["import", str(real_data / "EMDReader_SpectrumImage_Si.emd"), "--out", str(out)]) == 0
    s = open_session(out)
    st = read_frames(real_data / "EMDReader_SpectrumImage_Si.emd")
    assert s.n_frames == 5 and s.frame_shape == (16, 16)
    np.testing.assert_allclose(s.frame_table["time"], st.times_s)
    for i, t, fr in s.iter_frames():
        np.testing.assert_array_equal(fr, st.frames[i])
    assert np.all(np.isnan(s.frame_table["bias"]))  # no bias log: unknown, not zero
    mic = s.group("/entry/instrument/microscope")
    assert mic["detector"] == "HAADF" and mic["ht_V"] == 200e3


def test_folder_of_single_velox_images_with_same_second(real_data, tmp_path):
    import shutil

    for k in (1, 2, 10):  # natural order: 1, 2, 10
        shutil.copy(real_data / "STEM HAADF Diffraction Micro.emd", tmp_path / f"HAADF {k}.emd")
    st = read_frames(tmp_path)
    # Velox start times have 1 s resolution: equal here, so the files follow each other by their frame time
    np.testing.assert_allclose(st.times_s, [0.0, 0.24706, 0.49412], rtol=1e-4)
    assert [s.rsplit("/", 1)[-1] for s in st.sources] == ["HAADF 1.emd", "HAADF 2.emd", "HAADF 10.emd"]
    assert "coarse" in st.meta["time_source"]


# file, (frames, ny, nx), pixel size (m), frame times (s) — all from ../shared/data/real/README.md
README_FACTS = [
    ("EMDReader_SpectrumImage_Si.emd", (5, 16, 16), 5.302415e-9, [0, 0.0416, 0.0832, 0.1248, 0.1664]),
    ("fei_emd_image.emd", (1, 512, 512), 5.3024148e-9, [0]),
    ("STEM HAADF Diffraction Micro.emd", (1, 128, 128), 87.3708e-9, [0]),
    ("fei_example_tem_stack.emd", (2, 3, 3), 8.1729e-12, [0, 0.8]),
    ("test_stackbuilder_imagestack.dm3", (3, 2, 16), 0.059983e-6, [0, 1, 2]),  # no time calibration: 1 s
    ("test_STEM_image.dm3", (1, 68, 68), 0.248538e-9, [0]),
    ("dmTest_3D_int16_64,65,66.dm4", (66, 65, 64), 2e-12, list(range(66))),
    ("test_loading_image_saved_with_DM_stack.tif", (2, 68, 68), 0.168674e-6, [0, 2.5]),
    ("test_loading_image_saved_with_imageJ_stack.tif", (2, 68, 68), 0.16867e-6, [0, 2.5]),
]


@pytest.mark.parametrize("name, shape, pixel_m, times", README_FACTS, ids=[f[0][:24] for f in README_FACTS])
def test_insitu_import_each_real_file(real_data, tmp_path, name, shape, pixel_m, times):
    out = tmp_path / "s.h5"
    assert main(["import", str(real_data / name), "--out", str(out)]) == 0
    with open_session(out) as s:
        assert (s.n_frames,) + s.frame_shape == shape
        assert s.pixel_size_m == pytest.approx(pixel_m, rel=2e-4)
        np.testing.assert_allclose(s.frame_table["time"], times, atol=1e-3)
        assert s.status == "complete" and s.frame_table["time"][0] == 0.0  # time 0 is the first frame


def test_import_bias_log_against_frames_without_clock(real_data, tmp_path, capsys):
    tif = str(real_data / "test_loading_image_saved_with_DM_stack.tif")  # a DM TIFF export has no date
    log = str(real_data / "protochips_electrical.csv")
    out = tmp_path / "s.h5"
    assert main(["import", tif, "--out", str(out), "--bias-log", log]) == 1
    err = capsys.readouterr().err
    assert "the frames carry no absolute time" in err and "--bias-offset-s" in err and not out.exists()
    assert main(["import", tif, "--out", str(out), "--bias-log", log, "--bias-offset-s", "1.0"]) == 0
    s = open_session(out)
    lg = read_bias_log(log)
    # frame 1 is at 2.5 s, i.e. 1.5 s into the log
    assert s.frame_table["bias"][1] == pytest.approx(np.interp(1.5, lg.time_s, lg.voltage_V))
    assert s.frame_table["bias"][0] != s.frame_table["bias"][0]  # frame 0 (t=0) is before the log: NaN
