"""Overlay data for the live image: the GB network coloured by the simulated current jump, electrodes.

The microstructure comes from the virtual specimen (``--mock``) or from the
session file (``/entry/sample/microstructure``, written by mock runs); the
GB jumps from the specimen's simulation, or from a simulation run here in a
background thread (a second or so on a 256² lamella).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass
class OverlayData:
    """What the image view draws: GB faces (y, x on the grain grid) with a value each, and electrode masks."""

    shape: tuple
    gb_y: np.ndarray
    gb_x: np.ndarray
    gb_value: np.ndarray | None
    electrodes: dict
    note: str = ""


def gb_jump_per_face(bp: dict, gb_table: dict | None) -> np.ndarray | None:
    """The ``jump`` of each boundary face's grain pair from a GB table (NaN for pairs not in it).

    Parameters
    ----------
    bp : dict from :func:`insitu.analysis.transport.microstructure.boundary_pixels` (``grain_a`` < ``grain_b``)
    gb_table : dict of arrays with ``grain_a``, ``grain_b``, ``jump``

    Examples
    --------
    >>> bp = {"grain_a": np.array([1, 1, 2]), "grain_b": np.array([2, 3, 3])}
    >>> gb = {"grain_a": np.array([3, 1]), "grain_b": np.array([2, 2]), "jump": np.array([7.0, 5.0])}
    >>> gb_jump_per_face(bp, gb).tolist()
    [5.0, nan, 7.0]
    """
    if not gb_table or "jump" not in gb_table:
        return None
    a = np.asarray(gb_table["grain_a"], np.int64)
    b = np.asarray(gb_table["grain_b"], np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    n = int(max(hi.max(initial=0), np.max(bp["grain_b"], initial=0))) + 1
    keys = lo * n + hi
    order = np.argsort(keys)
    keys, jumps = keys[order], np.asarray(gb_table["jump"], float)[order]
    q = np.asarray(bp["grain_a"], np.int64) * n + np.asarray(bp["grain_b"], np.int64)
    idx = np.clip(np.searchsorted(keys, q), 0, max(len(keys) - 1, 0))
    out = np.full(q.shape, np.nan)
    if len(keys):
        hit = keys[idx] == q
        out[hit] = jumps[idx[hit]]
    return out


def overlay_from(micro, gb_table: dict | None = None, note: str = "") -> OverlayData:
    """Overlay data from a Microstructure (and a GB table with ``jump``)."""
    from insitu.analysis.transport.microstructure import boundary_pixels

    bp = boundary_pixels(micro.grains)
    return OverlayData(tuple(micro.grains.shape), bp["ya"], bp["xa"], gb_jump_per_face(bp, gb_table),
                       dict(micro.electrodes), note)


def microstructure_from_session(path):
    """The microstructure stored in a session file, or None."""
    import h5py

    from insitu.analysis.transport.microstructure import read_microstructure

    with h5py.File(path, "r", swmr=True) as f:
        g = f.get("/entry/sample/microstructure")
        if g is None:
            return None
        return read_microstructure(g)


def simulate_jumps(micro) -> dict | None:
    """GB table from a simulation with the first electrode at 0 V and the second at 1 V (jumps scale with V)."""
    from insitu.analysis.transport.simulator import simulate

    names = list(micro.electrodes)
    if len(names) < 2:
        return None
    res = simulate(micro, {names[0]: 0.0, names[1]: 1.0})
    return res.gb_table


class OverlayLoader(threading.Thread):
    """Build :class:`OverlayData` in the background; ``result`` / ``error`` when done.

    Parameters
    ----------
    get_source : callable returning ``(microstructure, gb_table_or_None)`` (may be slow; runs here)
    """

    def __init__(self, get_source):
        super().__init__(name="insitu-overlays", daemon=True)
        self._get = get_source
        self.result: OverlayData | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            micro, gb, note = self._get()
            if micro is None:
                self.error = "no microstructure for this session"
                return
            if gb is None:
                gb = simulate_jumps(micro)
                note = note or "GB jumps from a simulation (electrodes at 0 V / 1 V)"
            self.result = overlay_from(micro, gb, note)
        except Exception as exc:  # overlays are optional: report, never crash
            self.error = f"{type(exc).__name__}: {exc}"
