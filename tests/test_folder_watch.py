"""Folder watch frame source (issue 9): complete new files only, each with its bias in a live run."""
from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from insitu.core.clock import Clock
from insitu.drivers.folder import FolderWatchSource, is_candidate
from insitu.core.errors import UserError
from insitu.core.readers import read_frames

pytestmark = [pytest.mark.filterwarnings("ignore")]

DM_TIF = "test_loading_image_saved_with_DM_stack.tif"
EMD = "STEM HAADF Diffraction Micro.emd"


def _poll_until(src, n, timeout=5.0):
    got, t_end = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < t_end:
        got += src.poll()
        time.sleep(0.02)
    return got


def test_candidate_names():
    assert is_candidate("HAADF 0001.emd") and is_candidate("a.DM4") and is_candidate("x.tiff")
    for bad in ("~a.emd", ".a.emd", "a.emd.tmp", "a.tif.part", "a.txt", "a.emd~", "a.h5"):
        assert not is_candidate(bad), bad
    assert is_candidate("HAADF_1.emd", "HAADF*") and not is_candidate("BF_1.emd", "HAADF*")


def test_missing_folder_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        FolderWatchSource(tmp_path / "nope", Clock())


@pytest.mark.real_data
def test_new_complete_files_become_frames(real_data, tmp_path):
    shutil.copy(real_data / EMD, tmp_path / "before.emd")  # there before start: not part of the run
    clock = Clock()
    src = FolderWatchSource(tmp_path, clock, settle_s=0.25)
    src.start()
    assert src.poll() == []
    # a file written in two parts with a pause shorter than settle_s is delivered once, complete
    raw = (real_data / EMD).read_bytes()
    t_write = clock.now()
    with open(tmp_path / "one.emd", "wb") as fh:
        fh.write(raw[: len(raw) // 2])
        fh.flush()
        assert src.poll() == []
        time.sleep(0.1)
        assert src.poll() == []
        fh.write(raw[len(raw) // 2:])
    got = _poll_until(src, 1)
    assert len(got) == 1 and got[0].meta["file"] == "one.emd"
    expected = read_frames(real_data / EMD)
    np.testing.assert_array_equal(got[0].data, expected.frames[0])
    assert got[0].meta["pixel_size_m"] == pytest.approx(87.3708e-9, rel=1e-6)
    assert t_write <= got[0].time_s <= t_write + 0.2  # the time it appeared, not when it settled
    # a temporary name is ignored until renamed
    shutil.copy(real_data / DM_TIF, tmp_path / "stack.tif.tmp")
    time.sleep(0.3)
    assert src.poll() == []
    (tmp_path / "stack.tif.tmp").rename(tmp_path / "stack.tif")
    got = _poll_until(src, 2)
    assert [f.meta["file_frame"] for f in got] == [0, 1] and [f.index for f in got] == [1, 2]
    assert got[1].time_s - got[0].time_s == pytest.approx(2.5)  # the stack keeps its 2.5 s spacing
    assert src.delivered == ["one.emd", "stack.tif"] and src.poll() == []


def test_unreadable_file_is_skipped_not_fatal(tmp_path):
    src = FolderWatchSource(tmp_path, Clock(), settle_s=0.05, max_attempts=2)
    src.start()
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage" * 10)
    t_end = time.monotonic() + 3
    while not src.skipped and time.monotonic() < t_end:
        assert src.poll() == []
        time.sleep(0.03)
    assert [n for n, _ in src.skipped] == ["broken.tif"]
    src.stop()
    assert src.poll() == []


@pytest.mark.slow
@pytest.mark.real_data
def test_live_run_records_copied_files_with_bias(real_data, tmp_path):
    """Engine + folder source + session writer: files copied in during the run are frames with their bias."""
    engine_mod = pytest.importorskip("insitu.control.engine")
    from insitu.drivers.mock import MockBeamBlanker, MockSourceMeter
    from insitu.drivers.interfaces import Instruments
    from insitu.control.protocol import parse_protocol
    from insitu.core.session import SessionWriter, open_session

    watch = tmp_path / "velox"
    watch.mkdir()
    protocol = parse_protocol(
        "name: folder-test\n"
        "limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 2.0}\n"
        "sample_interval: 0.1\n"
        "steps:\n  - beam: unblank\n  - ramp: {to: 3.0, rate: 2.0}\n  - hold: {duration: 1.5}\n"
        "  - ramp: {to: 0.0, rate: 2.0}\n")
    clock = Clock()
    inst = Instruments(MockSourceMeter(1e7, clock), MockBeamBlanker(),
                       FolderWatchSource(watch, clock, settle_s=0.15), clock)
    out = tmp_path / "run.h5"
    writer = SessionWriter(out, start_time_iso=clock.start_iso, protocol_text="name: folder-test\n")
    eng = engine_mod.Engine(protocol, inst, sinks=[writer])
    names = [f"frame{k}.emd" for k in range(3)]

    def microscope():
        for name in names:
            time.sleep(0.8)
            shutil.copy(real_data / EMD, watch / (name + ".tmp"))
            (watch / (name + ".tmp")).rename(watch / name)

    th = threading.Thread(target=microscope)
    th.start()
    try:
        eng.run()
    finally:
        th.join()
        writer.close()
    s = open_session(out)
    assert s.n_frames == 3, s.events
    assert s.frame_shape == (128, 128) and s.pixel_size_m == pytest.approx(87.3708e-9, rel=1e-6)
    np.testing.assert_array_equal(s.frame(2), read_frames(real_data / EMD).frames[0])
    # each frame carries the bias measured around its time: the engine takes the latest sample when the
    # frame is delivered, which is up to settle_s (+ a poll and a sample) after the file appeared
    for i, t, _ in s.iter_frames():
        window = (s.bias["time"] >= t - 0.1) & (s.bias["time"] <= t + 0.15 + 0.3)
        near = s.bias["voltage"][window]
        assert near.min() - 1e-6 <= s.frame_table["bias"][i] <= near.max() + 1e-6
    assert np.all(np.diff(s.frame_table["time"]) >= 0)  # in order (two files may be seen in one poll)
    assert s.frame_table["bias"].max() > 1.0  # frames arrived while biased


@pytest.mark.real_data
def test_insitu_run_with_folder_frames_config(real_data, tmp_path, capsys):
    """`insitu run --config` with `[frames] driver = "folder"`: files copied in during the run are frames."""
    pytest.importorskip("insitu.control.engine")
    from filetools import run_while
    from insitu.core.session import open_session

    watch = tmp_path / "export"
    watch.mkdir()
    (tmp_path / "inst.toml").write_text(
        '[source_meter]\ndriver = "mock"\nresistance_ohm = 1.0e7\n[beam_blanker]\ndriver = "mock"\n'
        f'[frames]\ndriver = "folder"\npath = "{watch.as_posix()}"\npattern = "HAADF*"\nsettle_s = 0.15\n')
    (tmp_path / "p.yaml").write_text(
        "name: folder-cli\nlimits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 2.0}\n"
        "sample_interval: 0.1\nsteps:\n  - beam: unblank\n  - ramp: {to: 2.0, rate: 1.0}\n"
        "  - hold: {duration: 1.5}\n  - ramp: {to: 0.0, rate: 2.0}\n")

    def microscope():
        time.sleep(0.3)
        shutil.copy(real_data / EMD, watch / "HAADF 1.emd")
        shutil.copy(real_data / EMD, watch / "BF 1.emd")  # another detector: not matched by the pattern
        time.sleep(2.0)  # into the hold at 2 V
        shutil.copy(real_data / EMD, watch / "HAADF 2.emd.tmp")
        (watch / "HAADF 2.emd.tmp").rename(watch / "HAADF 2.emd")
        time.sleep(0.4)
        shutil.copy(real_data / DM_TIF, watch / "HAADF 3.tif")  # 68x68: not the session's frame size

    rc, out = run_while(microscope, tmp_path)
    s = open_session(out)
    assert rc == 0 and s.status == "complete", capsys.readouterr().err
    assert s.n_frames == 2 and s.frame_shape == (128, 128)
    np.testing.assert_array_equal(s.frame(1), read_frames(real_data / EMD).frames[0])
    assert any(k == "frame" and "68x68" in m for _, k, m in s.events)  # the TIFF stack: kept out, said so
    t = s.frame_table["time"]
    assert 1.0 < t[1] - t[0] < 3.5
    for i in range(2):  # each frame has the bias measured around its time (engine: latest sample at delivery)
        near = s.bias["voltage"][(s.bias["time"] >= t[i] - 0.1) & (s.bias["time"] <= t[i] + 0.5)]
        assert near.min() - 1e-6 <= s.frame_table["bias"][i] <= near.max() + 1e-6
    assert s.frame_table["bias"][0] < 1.8 and s.frame_table["bias"][1] == pytest.approx(2.0, abs=0.05)
    from filetools import assert_hyperspy_opens

    assert_hyperspy_opens(out, n_frames=2)  # a folder-watch run opens in HyperSpy
