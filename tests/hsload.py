"""``hs.load(session, file_format="NeXus")``, the README's own line, on a session file of any kind."""
from __future__ import annotations

import pytest


def assert_hyperspy_opens(path, n_frames: int | None = None):
    """Load ``path`` with HyperSpy's NeXus reader (everything, as a user would) and check the frame stack.

    Returns the list of signals. Skips when HyperSpy is not installed.
    """
    hs = pytest.importorskip("hyperspy.api")
    import numpy as np

    from insitu.session import open_session

    sigs = hs.load(str(path), file_format="NeXus")
    sigs = sigs if isinstance(sigs, list) else [sigs]
    with open_session(path) as s:
        n = s.n_frames if n_frames is None else n_frames
        stacks = [g for g in sigs if isinstance(g, hs.signals.Signal2D) and g.data.ndim == 3]
        if n:
            assert len(stacks) == 1 and stacks[0].data.shape == (n,) + tuple(s.frame_shape)
            np.testing.assert_array_equal(stacks[0].data[-1], s.frame(-1))
    return sigs
