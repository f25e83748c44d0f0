"""``insitu gui`` from the command line: timed screenshot runs (mock, replay) and one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def insitu(*args, timeout=120):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "insitu", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def png_pixels(path) -> np.ndarray:
    """(h, w, 3) uint8 pixels of a PNG (read without Qt)."""
    import matplotlib.image as mpimg

    a = mpimg.imread(str(path))
    return (a[..., :3] * 255).astype(np.uint8)


def test_gui_mock_screenshot_mid_run(tmp_path):
    pytest.importorskip("insitu.control.engine")
    if not (ROOT / "examples" / "ding2023.yaml").is_file():
        pytest.skip("examples/ding2023.yaml not there yet")
    shot, out = tmp_path / "shot.png", tmp_path / "run.h5"
    r = insitu("gui", "--mock", "--screenshot", shot, "--duration", 4, "--out", out)  # waits for a first frame
    assert r.returncode == 0, r.stderr
    px = png_pixels(shot)
    assert px.shape[0] >= 650 and px.shape[1] >= 1000
    # left-top quadrant = live image, right = protocol panel: both carry detail, not flat background
    h, w = px.shape[:2]
    assert px[h // 10:h // 2, w // 8:w // 2].std() > 15
    assert px[:, int(w * 0.7):].std() > 15
    from insitu.core.session import open_session

    with open_session(out) as s:      # stopped safely after the screenshot, recorded meanwhile
        assert s.status == "aborted"
        assert len(s.bias["time"]) > 20 and s.n_frames >= 1
        assert s.bias["voltage"][-1] == pytest.approx(0.0, abs=1e-9)


def test_gui_replay_screenshot(tmp_path):
    pytest.importorskip("insitu.control.replay")
    from insitu.gui.feed import record_synthetic_session

    session = record_synthetic_session(tmp_path / "s.h5", duration_s=20.0, frame_rate_hz=2.0, frame_shape=(128, 128))
    shot = tmp_path / "replay.png"
    r = insitu("gui", "--replay", session, "--speed", 5, "--screenshot", shot, "--duration", 2)
    assert r.returncode == 0, r.stderr
    px = png_pixels(shot)
    assert px.shape[0] >= 650 and px.shape[1] >= 1000
    h, w = px.shape[:2]
    assert px[h // 10:h // 2, w // 8:w // 2].std() > 15


def test_gui_ctrl_c_stops_safely(tmp_path):
    pytest.importorskip("insitu.control.engine")
    import signal
    import time

    from insitu.core.session import open_session

    out = tmp_path / "run.h5"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    p = subprocess.Popen([sys.executable, "-m", "insitu", "gui", "--mock", "--time-scale", "10", "--duration", "120",
                          "--no-analysis", "--out", str(out)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:   # wait until the run records
            time.sleep(0.5)
            if out.exists() and out.stat().st_size > 200_000:
                break
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 3, err            # stopped early, like `insitu run`
    assert "ramping to 0 V" in err
    with open_session(out) as s:
        assert s.status == "aborted"
        assert s.bias["voltage"][-1] == 0.0
        assert "output off" in s.events[-1][2]


@pytest.mark.parametrize("args, words", [
    (("gui",), "choose a source"),
    (("gui", "--mock", "--screenshot", "x.png"), "--duration"),
    (("gui", "--replay", "/nonexistent/s.h5"), "not found"),
    (("gui", "--mock", "--duration", "-1"), "--duration"),
    (("gui", "--replay", "x.h5", "--frame-interval", "2"), "--frame-interval"),
])
def test_gui_bad_arguments_give_one_line_errors(args, words):
    r = insitu(*args, timeout=60)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0], r.stderr
