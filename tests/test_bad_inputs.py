"""Issue 18: inputs that imported wrong data with exit 0, and arguments that gave a traceback or a hang.

Each is now a one-line error, exit 1 (and nothing written). Each failed on the code before the fix.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from filetools import one_line_error
from insitu.cli import main
from insitu.core.records import BiasSample, FrameRecord
from insitu.core.session import SessionWriter, open_session

ROOT = Path(__file__).resolve().parents[1]
DM_TIF = "test_loading_image_saved_with_DM_stack.tif"
PROTOCHIPS = "protochips_electrical.csv"
EMD = "fei_emd_image.emd"


@pytest.mark.parametrize("keep", [0.75, 0.5])
def test_truncated_dm_stack_tiff_is_refused(real_data, tmp_path, capsys, keep):
    """Old code: a truncated two-frame DM-stack TIFF imported 1 of 2 frames, exit 0."""
    raw = (real_data / DM_TIF).read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[:int(len(raw) * keep)])
    out = tmp_path / "s.h5"
    assert main(["import", str(cut), "--out", str(out)]) == 1
    err = one_line_error(capsys)
    assert "truncated or damaged TIFF" in err and "cut.tif" in err
    assert not out.exists()
    full = tmp_path / "full.tif"
    full.write_bytes(raw)
    assert main(["import", str(full), "--out", str(out)]) == 0  # the whole file still imports, 2 frames
    with open_session(out) as s:
        assert s.n_frames == 2


def test_protochips_log_with_times_out_of_order_is_refused(real_data, tmp_path, capsys):
    """Old code: accepted; the bias was interpolated on a time axis that goes back."""
    lines = (real_data / PROTOCHIPS).read_text().splitlines(keepends=True)
    k = next(i for i, ln in enumerate(lines) if ln.startswith("296,"))
    lines[k] = lines[k].replace("296,", "96,", 1)  # 196 ms, then 96 ms
    bad = tmp_path / "electrical.csv"
    bad.write_text("".join(lines))
    out = tmp_path / "s.h5"
    args = ["import", str(real_data / EMD), "--out", str(out), "--bias-log", str(bad), "--bias-offset-s", "0"]
    assert main(args) == 1
    err = one_line_error(capsys)
    assert f"line {k + 1}: Time goes backwards (96 after 196)" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_bias_offset_must_be_finite(real_data, tmp_path, capsys, value):
    """Old code: `--bias-offset-s nan` reported 154 samples and wrote 0."""
    out = tmp_path / "s.h5"
    assert main(["import", str(real_data / EMD), "--out", str(out), "--bias-log", str(real_data / PROTOCHIPS),
                 f"--bias-offset-s={value}"]) == 1
    assert "--bias-offset-s" in one_line_error(capsys)
    assert not out.exists()


def test_demo_negative_seed_is_one_line(tmp_path, capsys):
    """Old code: a traceback from numpy's seed."""
    assert main(["demo", "--seed", "-1", "--out", str(tmp_path / "d"), "--quiet"]) == 1
    assert "--seed -1" in one_line_error(capsys)
    assert not (tmp_path / "d").exists()


def _session(path):
    with SessionWriter(path, start_time_iso="2026-01-01T00:00:00+00:00") as w:
        for i in range(3):
            w.write(BiasSample(1.0 * i, 0.0, 0.0, 0.0, False))
            w.write(FrameRecord(1.0 * i, np.full((16, 16), i, np.uint16), 0.0, 0.0, False, 0.0, 1e-9))
    return path


@pytest.mark.parametrize("speed", ["inf", "nan", "0", "-2"])
def test_replay_speed_must_be_finite(tmp_path, capsys, speed):
    """Old code: `replay --speed inf` hung."""
    s = _session(tmp_path / "s.h5")
    t0 = time.monotonic()
    assert main(["replay", str(s), f"--speed={speed}", "--quiet"]) == 1
    assert "--speed" in one_line_error(capsys) and time.monotonic() - t0 < 10


def test_gui_screenshot_into_missing_folder_is_one_line(tmp_path):
    """Old code: the window ran, then could not save, and the process hung."""
    r = subprocess.run([sys.executable, "-m", "insitu", "gui", "--mock", "--duration", "1", "--screenshot",
                        str(tmp_path / "missing" / "x.png")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 1
    err = r.stderr.strip()
    assert "\n" not in err and "missing" in err and "does not exist" in err, err


_KILLED = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from insitu.core.records import BiasSample, FrameRecord
    from insitu.core.session import SessionWriter
    w = SessionWriter(sys.argv[1], start_time_iso="2026-01-01T00:00:00+00:00", frame_shape=(48, 48),
                      frame_dtype=np.uint16)
    rng = np.random.default_rng(1)
    for i in range(6):
        w.write(BiasSample(1.0 * i, 0.0, 0.0, 0.0, False))
        w.write(FrameRecord(1.0 * i, rng.poisson(100, (48, 48)).astype(np.uint16), 0.0, 0.0, False, 0.0, 1e-9))
    w.flush()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_analyze_live_on_a_killed_session_ends(tmp_path, capsys):
    """Old code: `analyze --live` waited for a killed writer to close its file (until the idle timeout)."""
    p = tmp_path / "killed.h5"
    subprocess.run([sys.executable, "-c", _KILLED, str(p)])
    t0 = time.monotonic()
    assert main(["analyze", str(p), "--out", str(tmp_path / "an"), "--live", "--quiet"]) == 0
    assert time.monotonic() - t0 < 30
    assert "6 frames" in capsys.readouterr().out
    with open_session(p) as s:
        assert s.status == "interrupted"
