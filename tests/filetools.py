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
