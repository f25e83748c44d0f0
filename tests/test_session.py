"""Session file writer/reader: layout, round trip, thread safety, crash safety (real kill -9)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import h5py
import numpy as np
import pytest

from insitu.core.errors import StoppedEarly, UserError
from insitu.core.records import BeamSample, BiasSample, EventRecord, FrameRecord, ProgressRecord
from insitu.core.session import SessionWriter, open_session

T0 = "2026-03-01T10:00:00+01:00"


def _frame(i, shape=(8, 12), dtype=np.uint16):
    rng = np.random.default_rng(i)
    return rng.integers(0, 4000, size=shape).astype(dtype)


def test_round_trip_layout_and_values(tmp_path):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, protocol_text="name: demo\nsteps: []\n",
                      instruments_text="[source_meter]\ndriver='mock'\n")
    bias = [BiasSample(0.1 * i, 0.5 * i, 0.5 * i - 1e-3, 1e-9 * i, i == 3) for i in range(10)]
    for b in bias:
        w.write(b)
    w(BeamSample(0.25, False, 12.5))
    w(ProgressRecord(0.3, 0, 2, "ramp", 0.3, 1.0))  # ignored
    w(EventRecord(0.4, "compliance", "limit hit at 1.5 V"))
    frames = [_frame(i) for i in range(4)]
    for i, fr in enumerate(frames):
        w(FrameRecord(0.5 * i, fr, 0.5 * i, 1e-9 * i, False, 3.0 * i, 2.5e-9, drift_x=0.1 * i, drift_y=-0.2 * i))
    w.close("aborted")
    w.close("complete")  # idempotent: the first status stays

    with open_session(p) as s:
        assert s.status == "aborted" and s.start_time == T0 and s.end_time
        assert s.protocol_name == "demo" and "mock" in s.instruments_text
        np.testing.assert_allclose(s.bias["time"], [b.time_s for b in bias])
        np.testing.assert_allclose(s.bias["voltage"], [b.voltage_V for b in bias])
        np.testing.assert_allclose(s.bias["current"], [b.current_A for b in bias])
        assert s.bias["compliance"].tolist() == [b.compliance for b in bias]
        assert s.beam["dose_rate"].tolist() == [12.5] and s.beam["blanked"].tolist() == [False]
        assert s.events == [(0.4, "compliance", "limit hit at 1.5 V")]
        assert s.n_frames == 4 and s.frame_shape == (8, 12)
        for i, t, fr in s.iter_frames():
            np.testing.assert_array_equal(fr, frames[i])
            assert t == pytest.approx(0.5 * i)
        np.testing.assert_array_equal(s.frame(-1), frames[-1])
        np.testing.assert_allclose(s.frame_table["drift_y"], [-0.2 * i for i in range(4)])
        assert s.frame_table["pixel_size"][0] == 2.5e-9
        assert s.duration_s == pytest.approx(1.5)

    with h5py.File(p, "r") as f:  # a closed session is a plain HDF5 file
        e = f["entry"]
        assert e.attrs["NX_class"] == "NXentry"
        assert e["program"][()] == b"insitu" and e["version"][()].decode() and e["status"][()] == b"aborted"
        assert e["protocol"][()].decode().startswith("name: demo")
        assert e["bias"].attrs["NX_class"] == "NXlog" and e["beam"].attrs["NX_class"] == "NXlog"
        fr = e["frames"]
        assert fr.attrs["NX_class"] == "NXdata" and fr.attrs["signal"] == "data"
        assert fr.attrs["interpretation"] == "image" and list(fr.attrs["axes"]) == ["time", "y", "x"]
        assert fr["data"].chunks == (1, 8, 12) and fr["data"].dtype == np.uint16
        assert e["bias/current"].attrs["units"] == "A" and e["bias/time"].attrs["units"] == "s"
        assert e["bias/time"].attrs["start"] == T0 and e["frames/time"].attrs["start"] == T0
        assert fr["pixel_size"].attrs["units"] == "m"
        np.testing.assert_allclose(fr["x"][:3], [0, 2.5e-9, 5e-9])


def test_refuses_existing_file_unless_overwrite(tmp_path):
    p = tmp_path / "s.h5"
    p.write_bytes(b"precious")
    with pytest.raises(UserError, match="overwrite"):
        SessionWriter(p, start_time_iso=T0)
    assert p.read_bytes() == b"precious"
    SessionWriter(p, start_time_iso=T0, overwrite=True).close()
    assert open_session(p).status == "complete"


def test_missing_folder_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        SessionWriter(tmp_path / "nope" / "s.h5", start_time_iso=T0)


@pytest.mark.parametrize("exc, status", [(RuntimeError, "fault"), (StoppedEarly, "aborted")])
def test_context_manager_status(tmp_path, exc, status):
    p = tmp_path / "s.h5"
    with pytest.raises(exc):
        with SessionWriter(p, start_time_iso=T0) as w:
            w.write(BiasSample(0.0, 1.0, 1.0, 1e-9, False))
            raise exc("boom")
    s = open_session(p)
    assert s.status == status and len(s.bias["time"]) == 1


def test_concurrent_writers_lose_nothing(tmp_path):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, flush_interval_s=0.05)
    n_per = 400

    def worker(k):
        for i in range(n_per):
            w.write(BiasSample(k * 1000 + i, float(k), float(k), float(i), False))
            if i % 100 == 0:
                w.write(FrameRecord(k * 1000 + i, np.full((4, 4), k, np.int16), k, i, False, 0.0, 1e-9))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    s = open_session(p)
    assert len(s.bias["time"]) == 4 * n_per
    for k in range(4):
        rows = s.bias["setpoint"] == k
        assert sorted(s.bias["current"][rows]) == list(range(n_per))  # every row intact, none lost
        assert np.all(s.bias["voltage"][rows] == k)
    assert s.n_frames == 16
    for i, t, fr in s.iter_frames():  # each frame stored with its own table row
        assert np.all(fr == s.frame_table["bias"][i])


def test_frame_of_other_shape_is_skipped_with_an_event(tmp_path):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, frame_shape=(8, 12), frame_dtype=np.uint16)
    w.write(FrameRecord(0.0, _frame(0), 0.0, 0.0, False, 0.0, 1e-9))
    w.write(FrameRecord(1.0, _frame(1, shape=(9, 12)), 0.0, 0.0, False, 0.0, 1e-9))  # scan size changed
    w.write(FrameRecord(2.0, _frame(2), 0.0, 0.0, False, 0.0, 1e-9))
    w.flush()  # write() queues; the writer thread writes (and skips)
    assert w.n_skipped_frames == 1
    w.close()
    s = open_session(p)
    assert s.n_frames == 2 and s.frame_table["time"].tolist() == [0.0, 2.0]
    np.testing.assert_array_equal(s.frame(1), _frame(2))
    assert s.events == [(1.0, "frame", "frame skipped: shape 9x12 differs from the session's 8x12")]


def test_upfront_shape_with_other_dtype_is_rebuilt(tmp_path):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, frame_shape=(8, 12), frame_dtype=np.uint8)
    fr = _frame(0, dtype=np.float32) + 0.25
    w.write(FrameRecord(0.0, fr, 0.0, 0.0, False, 0.0, 1e-9))
    w.close()
    s = open_session(p)
    assert s.frame_dtype == np.float32
    np.testing.assert_array_equal(s.frame(0), fr)


def test_long_unicode_messages_are_cut_cleanly(tmp_path):
    p = tmp_path / "s.h5"
    with SessionWriter(p, start_time_iso=T0) as w:
        w.write(EventRecord(1.0, "info", "Å" * 1000))
        w.write(EventRecord(2.0, "short", "|I| = 8.1e-07 A ≥ 8e-07 A"))
    ev = open_session(p).events
    assert ev[0][2] == "Å" * 256  # 512 bytes of two-byte characters, none split
    assert ev[1] == (2.0, "short", "|I| = 8.1e-07 A ≥ 8e-07 A")


def test_instrument_and_groups_after_recording_started(tmp_path):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0)
    w.write(BiasSample(0.0, 0.0, 0.0, 0.0, False))
    w.set_instrument("source_meter", {"idn": "KEITHLEY,2450", "found": {"output_on": True, "level_V": 3.5},
                                      "set": {"compliance_current_A": 1e-6}, "note": None})
    w.write(BiasSample(0.2, 0.0, 0.0, 0.0, False))
    w.write_group("/entry/sample/truth/seeds", {"x_px": np.array([1.5, 2.5]), "first_frame": np.array([3, 4])},
                  {"units_x": "px"})
    w.close()
    s = open_session(p)
    sm = s.group("/entry/instrument/source_meter")
    assert sm["idn"] == "KEITHLEY,2450" and sm["found"]["level_V"] == 3.5 and "note" not in sm
    assert sm["set"]["compliance_current_A"] == 1e-6 and sm["attrs"]["NX_class"] == "NXcollection"
    seeds = s.group("/entry/sample/truth/seeds")
    assert seeds["x_px"].tolist() == [1.5, 2.5] and seeds["first_frame"].tolist() == [3, 4]
    assert seeds["attrs"]["units_x"] == "px"
    assert len(s.bias["time"]) == 2
    with pytest.raises(KeyError):
        s.group("/entry/nothing")


def test_non_session_files_are_user_errors(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(UserError, match="HDF5"):
        open_session(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(UserError, match="not an insitu session"):
        open_session(other)
    with pytest.raises(UserError, match="no such file"):
        open_session(tmp_path / "missing.h5")


def test_hyperspy_opens_session_as_image_stack(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    p = tmp_path / "s.h5"
    with SessionWriter(p, start_time_iso=T0) as w:
        for i in range(3):
            w.write(FrameRecord(0.5 * i, _frame(i, shape=(6, 10)), 0.0, 0.0, False, 0.0, 4e-9))
    sig = hs.load(p, file_format="NeXus", nxdata_only=True)
    assert sig.axes_manager.signal_dimension == 2 and sig.data.shape == (3, 6, 10)
    x = sig.axes_manager.signal_axes[0]
    assert x.scale == pytest.approx(4e-9) and x.units == "m" and x.size == 10
    assert sig.axes_manager.navigation_axes[0].scale == pytest.approx(0.5)
    np.testing.assert_array_equal(sig.data[2], _frame(2, shape=(6, 10)))
    everything = hs.load(p, file_format="NeXus")  # plain load: the stack first, then the logs as 1-D signals
    assert isinstance(everything[0], hs.signals.Signal2D) and everything[0].data.shape == (3, 6, 10)
    default = hs.load(p, file_format="NeXus", use_default=True)  # /entry@default -> frames
    assert isinstance(default, hs.signals.Signal2D) and default.data.shape == (3, 6, 10)


# ---------------------------------------------------------------------------------- crash safety
_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from insitu.core.records import BiasSample, FrameRecord
    from insitu.core.session import SessionWriter
    path, mode = sys.argv[1], sys.argv[2]
    w = SessionWriter(path, start_time_iso="2026-01-01T00:00:00+00:00")
    t0 = time.monotonic()
    i = 0
    while True:
        t = time.monotonic() - t0
        w.write(BiasSample(t, 1.0, 1.0, float(i), False))
        if i % 5 == 0:
            w.write(FrameRecord(t, np.full((64, 64), i, np.uint16), 1.0, float(i), False, 0.0, 1e-9))
        print(f"{t:.4f} {i}", flush=True)
        i += 1
        if mode == "quiet" and i == 30:
            print("quiet", flush=True)
            time.sleep(600)
        time.sleep(0.02)
""")


def _run_and_kill(path, mode, run_s):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), mode], stdout=subprocess.PIPE, text=True)
    last = None
    t_end = time.monotonic() + 60
    try:
        for line in proc.stdout:
            if line.startswith("quiet"):
                time.sleep(run_s)
                break
            last = tuple(float(x) for x in line.split())
            if last[0] >= run_s:
                break
            assert time.monotonic() < t_end, "child writer too slow"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return last


def test_kill_minus_9_mid_run_loses_at_most_a_second(tmp_path):
    p = tmp_path / "killed.h5"
    last_t, last_i = _run_and_kill(p, "busy", 2.5)
    s = open_session(p)  # no repair step by hand: the reader finds the writer's lock gone
    assert s.status == "interrupted" and s.recovered and s.closed_cleanly
    n = len(s.bias["time"])
    assert n >= 10
    assert s.bias["time"][-1] >= last_t - 1.2  # at most ~1 s lost (+ a scheduling margin)
    assert s.bias["current"].tolist() == list(range(n))  # rows contiguous and intact
    assert s.n_frames >= 1
    for i, t, fr in s.iter_frames():
        assert np.all(fr == s.frame_table["current"][i])
    last = max(s.bias["time"][-1], s.frame_table["time"][-1])
    assert s.events[-1][1] == "interrupted" and f"t = {last:.3f} s" in s.events[-1][2]
    s.close()
    with h5py.File(p, "r") as f:  # a plain HDF5 file again, with its last sample time on record
        assert f["entry/status"][()] == b"interrupted"
        assert f["entry/status"].attrs["last_sample_time_s"] == pytest.approx(last)


def test_kill_minus_9_when_quiet_keeps_everything(tmp_path, capsys):
    p = tmp_path / "quiet.h5"
    _run_and_kill(p, "quiet", 1.6)  # 1.6 s after the last write: the background flusher has run
    s = open_session(p)
    assert len(s.bias["time"]) == 30 and s.n_frames == 6
    s.close()
    from insitu.cli import main

    assert main(["info", str(p)]) == 0  # no repair step
    out = capsys.readouterr().out
    assert "status:     interrupted" in out and "30 samples" in out and "frames:     6 × 64×64" in out


def test_live_reader_sees_new_records_after_refresh(tmp_path):
    p = tmp_path / "live.h5"
    w = SessionWriter(p, start_time_iso=T0, flush_interval_s=0.1, frame_shape=(8, 12), frame_dtype=np.uint16)
    w.write(BiasSample(0.0, 0.0, 0.0, 0.0, False))
    w.flush()
    s = open_session(p)  # a reader in the same process, as a GUI would be
    assert len(s.bias["time"]) == 1 and s.n_frames == 0
    assert s.status == "running" and not s.recovered  # the writer's lock says it is alive
    w.write(BiasSample(0.1, 0.0, 0.0, 0.0, False))
    w.write(FrameRecord(0.1, _frame(0), 0.0, 0.0, False, 0.0, 1e-9))
    w.write(FrameRecord(0.2, _frame(1), 0.0, 0.0, False, 0.0, 1e-9))
    w.flush()
    s.refresh()
    assert len(s.bias["time"]) == 2 and s.n_frames == 2
    np.testing.assert_array_equal(s.frame(1), _frame(1))
    with pytest.raises(RuntimeError, match="close readers"):
        w.set_instrument("x", {"a": 1})  # structure changes need the readers closed
    w.write(BiasSample(0.3, 0.0, 0.0, 0.0, False))
    s.close()
    w.set_instrument("x", {"a": 1})
    w.close()
    s = open_session(p)
    assert s.status == "complete" and len(s.bias["time"]) == 3 and s.n_frames == 2


def test_info_summarises_a_session(tmp_path, capsys):
    from insitu.cli import main

    p = tmp_path / "s.h5"
    with SessionWriter(p, start_time_iso=T0, protocol_text="name: ding2023-first-extraction\n") as w:
        for i in range(11):
            w.write(BiasSample(0.2 * i, 0.1 * i, 0.1 * i, 1e-8 * i, False))
        w.write(EventRecord(1.0, "compliance", "limit hit"))
        w.write(FrameRecord(1.5, _frame(0), 0.7, 7e-8, False, 12.0, 5.3e-9))
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    for text in ("status:     complete", "protocol:   ding2023-first-extraction", "duration:   2.0 s",
                 "11 samples", "V 0 .. 1 V", "|I| max 100 nA", "frames:     1 × 8×12 uint16", "pixel 5.3 nm",
                 "events:     1 (compliance 1)", "limit hit"):
        assert text in out, text
    assert main(["info", str(tmp_path / "none.h5")]) == 1


def test_writer_killed_outside_swmr_is_repaired_by_info(tmp_path, capsys):
    """A writer that dies while adding groups (file open without SWMR) leaves flags; no lock is held,
    so the first reader clears them at once (no waiting for the file to age)."""
    from insitu.cli import main

    p = tmp_path / "window.h5"
    with SessionWriter(p, start_time_iso=T0) as w:
        w.write(BiasSample(0.0, 1.0, 1.0, 2e-9, False))
    child = ("import h5py, os, signal, sys\n"
             "f = h5py.File(sys.argv[1], 'r+', libver='latest')\n"
             "f.require_group('entry/sample'); f.flush()\n"
             "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", child, str(p)])
    from insitu.core.superblock import read_superblock

    assert read_superblock(p).flags != 0
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "1 samples" in out and "status:     complete" in out
    assert read_superblock(p).flags == 0
    with h5py.File(p, "r") as f:  # a plain HDF5 file again
        assert f["entry/bias/current"][0] == 2e-9


def test_reader_in_another_process_does_not_stop_the_writer(tmp_path):
    """A GUI or `insitu info` holding the file open must not break the first frame / set_instrument."""
    p = tmp_path / "shared.h5"
    w = SessionWriter(p, start_time_iso=T0)
    w.write(BiasSample(0.0, 0.0, 0.0, 0.0, False))
    w.flush()
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from insitu.core.session import open_session
            s = open_session(sys.argv[1])
            print(len(s.bias["time"]), s.n_frames, flush=True)
            sys.stdin.readline()
            s.refresh()
            print(len(s.bias["time"]), s.n_frames, flush=True)
            s.close()
        """), str(p)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().split() == ["1", "0"]
        w.write(FrameRecord(0.1, _frame(0), 0.0, 0.0, False, 0.0, 1e-9))  # creates the frames dataset
        w.set_instrument("source_meter", {"idn": "X"})
        w.write(BiasSample(0.2, 0.0, 0.0, 0.0, False))
        w.flush()
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split() == ["2", "1"]
    finally:
        reader.wait(10)
    w.close()
    s = open_session(p)
    assert s.n_frames == 1 and len(s.bias["time"]) == 2 and s.group("/entry/instrument/source_meter")["idn"] == "X"


def test_modify_and_recorded_frame_times_are_public_and_crash_safe(tmp_path):
    """A foreign layout goes in through modify(); recorded_frame_times() returns what was written."""
    from insitu.core.records import FrameRecord
    from insitu.core.session import SessionWriter, open_session

    p = tmp_path / "s.h5"
    with SessionWriter(p, start_time_iso="2026-01-01T00:00:00+00:00") as w:
        assert w.recorded_frame_times().size == 0
        for k, t in enumerate((0.5, 1.5, 4.0)):
            w.write(FrameRecord(t, np.full((4, 5), k, np.uint16), 1.0, 1e-9, False, 0.0, 1e-9))
        w.modify(lambda f: f.require_group("/entry/sample/extra").create_dataset("v", data=np.arange(3)))
        w.write(FrameRecord(5.0, np.zeros((4, 5), np.uint16), 1.0, 1e-9, False, 0.0, 1e-9))
        assert np.allclose(w.recorded_frame_times(), [0.5, 1.5, 4.0, 5.0])
    with open_session(p) as s:
        assert s.n_frames == 4 and s.frame(1)[0, 0] == 1
        assert np.array_equal(s.group("/entry/sample/extra")["v"], np.arange(3))
