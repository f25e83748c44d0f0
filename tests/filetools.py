"""Helpers of the file tests: HyperSpy opens a session, one-line errors, a small tmpfs to fill."""
from __future__ import annotations

import pytest


def assert_hyperspy_opens(path, n_frames: int | None = None):
    """Load ``path`` with HyperSpy's NeXus reader (everything, as a user would) and check the frame stack.

    Returns the list of signals. Skips when HyperSpy is not installed.
    """
    hs = pytest.importorskip("hyperspy.api")
    import numpy as np

    from insitu.core.session import open_session

    sigs = hs.load(str(path), file_format="NeXus")
    sigs = sigs if isinstance(sigs, list) else [sigs]
    with open_session(path) as s:
        n = s.n_frames if n_frames is None else n_frames
        stacks = [g for g in sigs if isinstance(g, hs.signals.Signal2D) and g.data.ndim == 3]
        if n:
            assert len(stacks) == 1 and stacks[0].data.shape == (n,) + tuple(s.frame_shape)
            np.testing.assert_array_equal(stacks[0].data[-1], s.frame(-1))
    return sigs


def one_line_error(capsys) -> str:
    """The captured stderr, checked to be one line without a traceback."""
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def can_mount_tmpfs() -> bool:
    """True when ``unshare -rm`` may mount a small tmpfs here (a real filesystem to fill in tests)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                          capture_output=True).returncode == 0


def run_while(microscope, tmp_path, *extra_args, start_timeout_s: float = 60.0) -> tuple[int, object]:
    """``insitu run p.yaml --config inst.toml --out run.h5`` (files in ``tmp_path``) while
    ``microscope()`` runs in a thread (e.g. copying frame files into a watched folder); returns
    (exit code, path of the session).

    ``microscope`` is called once the run has started its frame source (the ``output on`` line is in
    the run's log, ``run.log``), so that its own delays count from the start of the protocol and not
    from a start-up that takes longer on a loaded machine (a file there before the start is not a
    frame of the run, by design)."""
    import threading
    import time

    from insitu.cli import main

    out = tmp_path / "run.h5"
    log = out.with_suffix(".log")
    done = threading.Event()

    def play():
        t0 = time.monotonic()
        while not done.is_set() and time.monotonic() - t0 < start_timeout_s:
            if log.exists() and "output on" in log.read_text(errors="replace"):
                microscope()
                return
            time.sleep(0.02)

    th = threading.Thread(target=play)
    th.start()
    try:
        rc = main(["run", str(tmp_path / "p.yaml"), "--config", str(tmp_path / "inst.toml"),
                   "--out", str(out), *extra_args])
    finally:
        done.set()
        th.join()
    return rc, out
