"""Issue 18, files: nothing recorded is lost or faked (kill -9, a second writer, truncation, a full disk).

Every test here failed on the code before the fix (named in each docstring).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from filetools import can_mount_tmpfs, one_line_error, run_while
from insitu.cli import main
from insitu.core.errors import UserError
from insitu.core.records import BiasSample, EventRecord, FrameRecord
from insitu.core.session import SessionWriter, open_session


def writer_alive(path):
    from insitu.core.writelock import writer_alive as alive

    return alive(path)

ROOT = Path(__file__).resolve().parents[1]
T0 = "2026-01-01T00:00:00+00:00"


def _session(path, n_frames=6, shape=(16, 24)):
    with SessionWriter(path, start_time_iso=T0) as w:
        for i in range(n_frames):
            w.write(BiasSample(0.5 * i, 1.0, 1.0, 1e-9 * i, False))
            w.write(FrameRecord(0.5 * i, np.full(shape, i + 1, np.uint16), 1.0, 1e-9 * i, False, 0.0, 2e-9))
        w.write(EventRecord(0.1, "info", "hello"))
    return path


# ------------------------------------------------------------------------------------ kill -9
_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from insitu.core.records import BiasSample, EventRecord, FrameRecord
    from insitu.core.session import SessionWriter
    w = SessionWriter(sys.argv[1], start_time_iso="2026-01-01T00:00:00+00:00", overwrite=True,
                      flush_interval_s=0.1)
    i = 0
    while True:
        w.write(BiasSample(0.01 * i, 1.0, 1.0, 1e-9, False))
        if i % 10 == 0:
            w.write(FrameRecord(0.01 * i, np.full((32, 32), i + 1, np.uint16), 1.0, 1e-9, False, 0.0, 1e-9))
            w.write(EventRecord(0.01 * i, "info", f"frame {i}"))
        if i == 50:
            print("ready", flush=True)
        i += 1
        time.sleep(0.005)
""")


def _start_writer(path):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    return proc


def test_killed_session_opens_plainly_and_in_hyperspy_after_info(tmp_path, capsys):
    """Old code: 13 of 13 killed files opened only with swmr=True; hs.load failed."""
    hs = pytest.importorskip("hyperspy.api")
    p = tmp_path / "killed.h5"
    proc = _start_writer(p)
    assert writer_alive(p) is True
    proc.kill()
    proc.wait()
    assert writer_alive(p) is False  # the kernel dropped the lock with the process: no file age involved
    with pytest.raises(OSError):
        h5py.File(p, "r")  # what a user met before any verb looked at it
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "status:     interrupted" in out and "interrupted the writer stopped without closing" in out
    with h5py.File(p, "r") as f:
        assert f["entry/status"][()] == b"interrupted"
        last = f["entry/status"].attrs["last_sample_time_s"]
        assert last == pytest.approx(np.nanmax(f["entry/bias/time"][()]))
        n = f["entry/frames/data"].shape[0]
        assert n == f["entry/frames/time"].shape[0] >= 1
        assert np.all(f["entry/frames/data"][n - 1] > 0)  # no unfilled (zero) frame kept
    sigs = hs.load(p, file_format="NeXus")
    assert isinstance(sigs[0], hs.signals.Signal2D) and sigs[0].data.shape == (n, 32, 32)


SHORT_RUN = """\
name: two-writers
limits: {max_voltage: 5.0, compliance_current: 1.0e-6, max_slew_rate: 1.0, frame_stall_s: 60}
sample_interval: 0.5
steps:
  - beam: unblank
  - ramp: {to: 2.0, rate: 0.5}
  - hold: {duration: 40}
  - ramp: {to: 0.0, rate: 0.5}
"""


def test_second_writer_is_refused_and_first_finishes_good(tmp_path, capsys):
    """Old code: `run --overwrite` on a live session truncated it; the first run exited 0 with a corrupt file."""
    p = tmp_path / "live.h5"
    proto = tmp_path / "p.yaml"
    proto.write_text(SHORT_RUN)
    cmd = [sys.executable, "-m", "insitu", "run", str(proto), "--mock", "--time-scale", "10", "--out", str(p)]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while writer_alive(p) is not True:
            assert first.poll() is None and time.monotonic() - t0 < 60, first.communicate()
            time.sleep(0.05)
        with pytest.raises(UserError, match="another insitu process is writing"):
            SessionWriter(p, start_time_iso=T0, overwrite=True)
        assert main(["run", str(proto), "--mock", "--time-scale", "10", "--out", str(p), "--overwrite"]) == 1
        assert "another insitu process is writing" in one_line_error(capsys)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    with open_session(p) as s:  # the first run's file, whole
        assert s.status == "complete" and s.n_frames >= 1 and not s.recovered
        assert s.bias["setpoint"].max() == pytest.approx(2.0) and abs(s.bias["setpoint"][-1]) < 1e-12
        assert s.events[0][1] == "start" and s.events[-1][1] == "end"


def test_writer_lock_is_released_at_close(tmp_path):
    p = _session(tmp_path / "s.h5")
    assert writer_alive(p) is False
    with SessionWriter(p, start_time_iso=T0, overwrite=True) as w:  # a later run may replace it
        w.write(BiasSample(0.0, 0.0, 0.0, 0.0, False))
        with pytest.raises(UserError, match="another insitu process"):
            SessionWriter(p, start_time_iso=T0, overwrite=True)  # also within one process
    assert open_session(p).status == "complete"


# ------------------------------------------------------------------------------------ truncation
@pytest.mark.parametrize("verb", ["info", "export", "replay", "analyze"])
@pytest.mark.parametrize("keep", [4096, "half"])
def test_truncated_session_is_one_line_exit_1(tmp_path, capsys, verb, keep):
    """Old code: `head -c 4096` made these spin at 100 % CPU; half a file replayed frames as zeros, exit 0."""
    src = _session(tmp_path / "s.h5", n_frames=40, shape=(64, 64))
    data = src.read_bytes()
    p = tmp_path / "cut.h5"
    p.write_bytes(data[:4096] if keep == 4096 else data[:len(data) // 2])
    args = {"info": ["info", str(p)],
            "export": ["export", str(p), "--to", "hspy", "--out", str(tmp_path / "x.hspy")],
            "replay": ["replay", str(p), "--speed", "1000", "--out", str(tmp_path / "again.h5"), "--quiet"],
            "analyze": ["analyze", str(p), "--out", str(tmp_path / "an"), "--quiet"]}[verb]
    t0 = time.monotonic()
    assert main(args) == 1
    assert time.monotonic() - t0 < 20
    assert "truncated" in one_line_error(capsys)
    assert not (tmp_path / "x.hspy").exists() and not (tmp_path / "again.h5").exists()


def test_chunks_beyond_end_of_file_are_refused(tmp_path):
    """Frames whose bytes lie past the end of the file must not read back as zeros, even when the
    end-of-file address says the file is whole (a stale address, as a killed writer can leave): here
    the address is set back by hand and the file cut to it, so the last frames are gone."""
    from insitu.core.superblock import _lookup3, read_superblock

    p = _session(tmp_path / "s.h5", n_frames=10, shape=(64, 64))
    with h5py.File(p, "r") as f:
        ends = []
        f["entry/frames/data"].id.chunk_iter(lambda info: ends.append(info.byte_offset + info.size))
    cut = sorted(ends)[-3]  # keeps all but the last two frames' bytes
    raw = bytearray(p.read_bytes()[:cut])
    so = raw[9]
    raw[12 + 2 * so:12 + 3 * so] = cut.to_bytes(so, "little")
    n = 12 + 4 * so
    raw[n:n + 4] = _lookup3(bytes(raw[:n])).to_bytes(4, "little")
    p.write_bytes(bytes(raw))
    assert read_superblock(p).eof_address == cut == p.stat().st_size
    with pytest.raises(UserError, match="truncated: /entry/frames/data"):
        open_session(p)


# ------------------------------------------------------------------------------------ disk full
def test_full_disk_is_a_recording_failure_not_silence(tmp_path, monkeypatch):
    """Old code: the background flusher swallowed write errors; the run went on unrecorded."""
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, frame_shape=(64, 64), frame_dtype=np.uint16)
    w.write(FrameRecord(0.0, np.ones((64, 64), np.uint16), 0.0, 0.0, False, 0.0, 1e-9))
    w.flush()
    real = os.statvfs

    class Full:  # the disk as statvfs reports it once it is (almost) full: 0.5 MB left
        def __init__(self, st):
            self.f_frsize = 4096
            self.f_bavail = (512 * 1024) // 4096

    import insitu.core.session as session_mod

    monkeypatch.setattr(session_mod.os, "statvfs", lambda path: Full(real(path)))
    from insitu.core.session import RecordingFailed

    # write() only queues (the writer thread meets the full disk); the failure reaches the caller at
    # the next write() or flush()
    w.write(FrameRecord(1.0, np.ones((64, 64), np.uint16), 0.0, 0.0, False, 0.0, 1e-9))
    with pytest.raises(RecordingFailed, match="No space left on device"):
        w.flush()
    with pytest.raises(RecordingFailed):
        w.write(BiasSample(1.1, 0.0, 0.0, 0.0, False))  # every later write says so too
    monkeypatch.setattr(session_mod.os, "statvfs", real)
    w.close("complete")  # the run's own status is replaced
    with open_session(p) as s:
        assert s.status == "recording_failed" and s.n_frames == 1


def test_flusher_error_reaches_the_next_write(tmp_path, monkeypatch):
    """Old code: `except Exception: pass` in the background flusher."""
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, flush_interval_s=0.1)
    w.write(BiasSample(0.0, 0.0, 0.0, 0.0, False))
    import errno

    def fail():
        raise OSError(errno.EIO, "Input/output error")

    from insitu.core.session import RecordingFailed

    monkeypatch.setattr(w, "_flush_locked", fail)
    t0 = time.monotonic()
    while w.error is None and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    assert isinstance(w.error, OSError)
    with pytest.raises(RecordingFailed, match="Input/output error"):
        w.write(BiasSample(0.5, 0.0, 0.0, 0.0, False))
    monkeypatch.undo()
    w.close("complete")
    assert open_session(p).status == "recording_failed"


FULL_PROTO = """
name: full-disk
limits: {max_voltage: 3.0, compliance_current: 1.0e-6, max_slew_rate: 4.0}
sample_interval: 0.05
steps:
  - beam: unblank
  - ramp: {to: 1.5}
  - acquire: {frames: 400}
  - ramp: {to: 0.0}
"""


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_run_on_a_filling_filesystem_exits_2_output_off_file_says_failed(tmp_path, emulator):
    """Fault injection on a real small filesystem: a 4 MB tmpfs (user+mount namespace) with ballast,
    so the disk fills a few seconds into the run. Old code: rc 139 after thousands of error lines,
    or a file saying "complete" with frames zeroed."""
    emu = emulator()
    cfg = tmp_path / "instruments.toml"
    cfg.write_text(f'[source_meter]\ndriver = "keithley2450"\nresource = "{emu.resource}"\ntimeout_s = 1.0\n'
                   '[beam_blanker]\ndriver = "mock"\n[frames]\ndriver = "mock"\nrate_hz = 20\n')
    proto = tmp_path / "p.yaml"
    proto.write_text(FULL_PROTO)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = textwrap.dedent(f"""
        set -u
        mount -t tmpfs -o size=4m tmpfs {mnt} || exit 90
        {sys.executable} -c "import os; st = os.statvfs('{mnt}'); free = st.f_bavail * st.f_frsize; \\
open('{mnt}/ballast', 'wb').write(bytes(free - (1 << 20) - 1500 * 1024))"
        {sys.executable} -m insitu run {proto} --config {cfg} --out {mnt}/s.h5 2> {tmp_path}/err.txt
        echo $? > {tmp_path}/rc.txt
        cp {mnt}/s.h5 {tmp_path}/s.h5
    """)
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, timeout=120)
    assert r.returncode == 0
    err = (tmp_path / "err.txt").read_text().strip()
    assert int((tmp_path / "rc.txt").read_text()) == 2, err
    assert "Traceback" not in err and "No space left on device" in err
    assert "recording failed" in err.splitlines()[-1]
    assert emu.output is False and emu.level_V == 0.0  # ramped down and switched off
    with open_session(tmp_path / "s.h5") as s:
        assert s.status == "recording_failed"
        assert 1 <= s.n_frames < 400
        assert all(s.frame(i).any() for i in range(s.n_frames))  # every frame kept is a real frame


# ------------------------------------------------------------------------------------ frames without a blanker
FOLDER_PROTO = ("name: folder-noblank\nlimits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 2.0}\n"
                "sample_interval: 0.1\nsteps:\n  - ramp: {to: 2.0, rate: 2.0}\n  - hold: {duration: 2.5}\n"
                "  - ramp: {to: 0.0, rate: 2.0}\n")


def _folder_run(real_data, tmp_path, blanker: str, n_files: int = 3):
    """`insitu run` with a folder-watch frame source; ``n_files`` Velox files are copied in during the run."""
    emd = real_data / "STEM HAADF Diffraction Micro.emd"
    watch = tmp_path / "export"
    watch.mkdir()
    (tmp_path / "inst.toml").write_text(
        '[source_meter]\ndriver = "mock"\nresistance_ohm = 1.0e7\n' + blanker
        + f'[frames]\ndriver = "folder"\npath = "{watch.as_posix()}"\nsettle_s = 0.15\n')
    (tmp_path / "p.yaml").write_text(FOLDER_PROTO)

    def microscope():
        for k in range(n_files):
            time.sleep(0.6)
            shutil.copy(emd, watch / f"f{k}.emd.tmp")
            (watch / f"f{k}.emd.tmp").rename(watch / f"f{k}.emd")

    return run_while(microscope, tmp_path)


def test_folder_watch_without_blanker_records_every_frame(real_data, tmp_path, capsys):
    """Old code: a folder-watch run with no [beam_blanker] recorded 0 of 3 copied Velox files, "complete"."""
    rc, out = _folder_run(real_data, tmp_path, blanker="")
    printed = capsys.readouterr().out
    assert rc == 0 and "3 frames" in printed and "warning" not in printed
    with open_session(out) as s:
        assert s.status == "complete" and s.n_frames == 3
        assert any(k == "beam" and "beam state unknown" in m for _, k, m in s.events)
        assert np.all(np.isnan(s.frame_table["dose"]))  # no blanker: the dose is not known, not zero
        assert s.frame_table["bias"].max() > 1.0


def test_run_that_records_no_frames_says_so(real_data, tmp_path, capsys):
    """Frames delivered while the blanker reports the beam blanked: none recorded. Old code: silent."""
    rc, out = _folder_run(real_data, tmp_path, blanker='[beam_blanker]\ndriver = "mock"\n', n_files=2)
    printed = capsys.readouterr().out
    assert rc == 0
    assert "warning: no frames recorded although the frame source delivered 2 " in printed, printed
    with open_session(out) as s:
        assert s.n_frames == 0
        assert any(k == "frames" and "delivered 2" in msg for _, k, msg in s.events)
