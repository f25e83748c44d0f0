"""Small mock session files for the batch tests and the batch benchmark (test helper).

A session holds a synthetic HAADF series with known seeds (:mod:`seriesgen`) and a bias log on
one clock; frame ``k`` is recorded at bias ``BIAS_STEP_V * k`` and, beam on, cumulative dose
``DOSE_STEP * k`` (0 with the beam blanked), so the bias and dose at any frame are known exactly.

Example
-------
>>> write_mock_session("s.h5", seed=1)      # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from insitu.core.records import BiasSample, FrameRecord
from insitu.core.session import SessionWriter
from seriesgen import make_series

BIAS_STEP_V = 0.5
DOSE_STEP = 10.0
CURRENT_STEP_A = 1e-9


def write_mock_session(path, seed: int, *, blanked: bool = False, n_frames: int = 16, shape=(96, 96),
                       n_seeds: int = 3):
    """Write a complete session file; returns the :class:`seriesgen.Series` it holds."""
    s = make_series(n_frames=n_frames, shape=shape, seed=seed, n_seeds=n_seeds)
    with SessionWriter(path, start_time_iso="2026-01-01T00:00:00+00:00", frame_shape=shape,
                       frame_dtype=np.float32) as w:
        for k in range(n_frames):
            t = float(s.times[k])
            w.write(BiasSample(t, BIAS_STEP_V * k, BIAS_STEP_V * k, CURRENT_STEP_A * k, False))
            w.write(FrameRecord(time_s=t, data=s.frames[k].astype(np.float32), bias_V=BIAS_STEP_V * k,
                                current_A=CURRENT_STEP_A * k, blanked=blanked,
                                dose=0.0 if blanked else DOSE_STEP * k, pixel_size_m=1e-9))
    return s
