"""Orientation maps: loading .ang/.ctf (orix), grain segmentation, mean orientation, misorientation.

The phase is treated as Na-beta''-alumina (trigonal, R-3m; Laue group -3m, proper point group 32)
whatever the file says. Orientations are Bunge Euler angles (radians) in orix's convention
(lab -> crystal), so the c-axis in the sample frame is (sin f1 sin F, -cos f1 sin F, cos F).

orix is imported only where a map is read (its import takes seconds); the misorientation used by the
simulator's GB table is plain numpy with the point-group-32 operators (checked against orix in the tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from insitu.core.errors import UserError


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, s, z], -1), np.stack([-s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, s], -1), np.stack([z, -s, c], -1)], -2)


def euler_to_matrix(euler_bunge) -> np.ndarray:
    """Bunge (phi1, Phi, phi2), radians -> rotation matrices g (n, 3, 3), sample -> crystal."""
    e = np.asarray(euler_bunge, float).reshape(-1, 3)
    return _rz(e[:, 2]) @ _rx(e[:, 1]) @ _rz(e[:, 0])


def _axis_angle(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


#: proper rotations of point group 32 (Laue -3m): 3-fold about c (z), 2-folds about x and x +- 120 deg
SYMMETRY_32 = np.array([np.eye(3), _axis_angle([0, 0, 1], 2 * np.pi / 3), _axis_angle([0, 0, 1], -2 * np.pi / 3),
                        _axis_angle([1, 0, 0], np.pi), _axis_angle([0.5, np.sqrt(3) / 2, 0], np.pi),
                        _axis_angle([-0.5, np.sqrt(3) / 2, 0], np.pi)])


def misorientation_deg(euler_a, euler_b) -> np.ndarray:
    """Misorientation angle (deg) between pairs of orientations, reduced by -3m crystal symmetry.

    Parameters
    ----------
    euler_a, euler_b : array_like, shape (n, 3)
        Bunge Euler angles (radians).

    Example
    -------
    >>> misorientation_deg([[0, 0, 0]], [[0, 0, 2 * np.pi / 3]])   # a 3-fold rotation about c
    array([0.])
    """
    ga, gb = euler_to_matrix(euler_a), euler_to_matrix(euler_b)
    if ga.shape[0] == 0:
        return np.zeros(0)
    d = gb @ np.swapaxes(ga, 1, 2)                     # crystal a -> crystal b
    S = SYMMETRY_32
    # trace(S_i d S_j^T) for all i, j
    tr = np.einsum("ikl,nlm,jkm->nij", S, d, S)
    best = np.clip((tr.reshape(len(d), -1).max(axis=1) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(best))


def matrix_to_euler(g) -> np.ndarray:
    """Rotation matrices (n, 3, 3), sample -> crystal, to Bunge Euler angles (radians, phi1/phi2 in [0, 2pi))."""
    g = np.asarray(g, float).reshape(-1, 3, 3)
    Phi = np.arccos(np.clip(g[:, 2, 2], -1.0, 1.0))
    s = np.sin(Phi)
    deg = s < 1e-8
    phi1 = np.where(deg, np.arctan2(g[:, 0, 1], g[:, 0, 0]), np.arctan2(g[:, 2, 0], -g[:, 2, 1]))
    phi2 = np.where(deg, 0.0, np.arctan2(g[:, 0, 2], g[:, 1, 2]))
    return np.stack([phi1 % (2 * np.pi), Phi, phi2 % (2 * np.pi)], axis=1)


@dataclass
class OrientationMap:
    """A square-grid orientation map.

    Attributes
    ----------
    euler : ndarray (ny, nx, 3)
        Bunge Euler angles, radians (NaN where there is no point).
    valid : ndarray of bool (ny, nx)
        Indexed points.
    step_m : float
        Grid step (m).
    thickness_m : float or None
        Lamella thickness (m) when the file's header gives it (:func:`header_thickness_m`).
    """

    euler: np.ndarray
    valid: np.ndarray
    step_m: float
    thickness_m: float | None = None


def header_thickness_m(path, default_unit_m: float = 1.0) -> float | None:
    r"""The specimen thickness (m) written in an orientation map's header, or None.

    Looks in the header (the lines before the data) for a line ``Thickness <value> [unit]``
    (``#`` comment prefix, ``:`` or ``=`` allowed; unit nm, um, µm, mm or m; without a unit, the
    map's length unit ``default_unit_m``).

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.ang")
    >>> _ = open(p, "w").write("# THICKNESS: 170 nm\n# GRID: SqrGrid\n0 0 0 0 0\n")
    >>> round(header_thickness_m(p) * 1e9, 6)          # nm
    170.0
    """
    import re

    pat = re.compile(r"^\s*#?\s*thickness\s*[:=]?\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*(nm|um|µm|mm|m)?\s*$", re.I)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for k, line in enumerate(fh):
            if k > 500 or (line.strip() and line.lstrip()[0] in "0123456789-+"):
                break                              # data start: the header is over
            hit = pat.match(line)
            if hit:
                unit = hit.group(2)
                return float(hit.group(1)) * (_UNITS[unit.lower()] if unit else default_unit_m)
    return None


_UNITS = {"nm": 1e-9, "um": 1e-6, "µm": 1e-6, "mm": 1e-3, "m": 1.0, "px": None}


def grid_from_xy(x, y):
    """Infer a square grid from scattered x, y coordinates: (rows, cols, step, (ny, nx)).

    Example
    -------
    >>> r, c, step, shape = grid_from_xy([0, 2, 4, 0, 2, 4], [0, 0, 0, 2, 2, 2])
    >>> shape, step
    ((2, 3), 2.0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    steps = []
    for v in (x, y):
        u = np.unique(np.round(v, 9))
        d = np.diff(u)
        d = d[d > 1e-9 * max(1.0, np.abs(u).max())]
        if d.size:
            steps.append(d.min())
    if not steps:
        raise UserError("orientation map: cannot infer a grid step from the x, y columns")
    step = float(f"{min(steps):.10g}")
    cols = np.rint((x - x.min()) / step).astype(np.int64)
    rows = np.rint((y - y.min()) / step).astype(np.int64)
    return rows, cols, step, (int(rows.max()) + 1, int(cols.max()) + 1)


def load_orientation_map(path) -> OrientationMap:
    """Read a TSL/ASTAR ``.ang`` or Oxford ``.ctf`` map with orix; the grid is inferred from x, y.

    Example
    -------
    >>> om = load_orientation_map("ACOM.ang")   # doctest: +SKIP
    >>> om.euler.shape                           # doctest: +SKIP
    (15, 15, 3)
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise UserError(f"orientation map {p} not found")
    try:
        from orix import io

        xm = io.load(str(p))
    except Exception as exc:  # orix raises many kinds on bad files
        raise UserError(f"cannot read orientation map {p}: {exc}".splitlines()[0]) from None
    rows, cols, step, shape = grid_from_xy(xm.x, xm.y)
    unit = str(getattr(xm, "scan_unit", "px") or "px").strip()
    factor = _UNITS.get(unit, None)
    if factor is None:
        raise UserError(f"orientation map {p}: unknown length unit '{unit}' (give --voxel-size-m)")
    euler = np.full(shape + (3,), np.nan)
    euler[rows, cols] = xm.rotations.to_euler()
    valid = np.zeros(shape, bool)
    valid[rows, cols] = np.asarray(xm.phase_id) >= 0
    valid &= np.all(np.isfinite(euler), axis=-1)
    return OrientationMap(euler=euler, valid=valid, step_m=step * factor, thickness_m=header_thickness_m(p, factor))


def segment_grains(euler, valid, threshold_deg: float = 5.0, min_grain_px: int = 1) -> np.ndarray:
    """Grain labels: 4-neighbours closer than ``threshold_deg`` (misorientation, -3m symmetry) join a grain.

    Parameters
    ----------
    euler : ndarray (ny, nx, 3)
        Bunge Euler angles, radians.
    valid : ndarray of bool (ny, nx)
    threshold_deg : float
    min_grain_px : int
        Grains smaller than this join the neighbouring grain they share most faces with.

    Returns
    -------
    ndarray of int32 (ny, nx): 0 where not valid, grain ids 1..n in order of first appearance.

    Example
    -------
    >>> e = np.zeros((2, 4, 3)); e[:, 2:, 1] = 1.0
    >>> segment_grains(e, np.ones((2, 4), bool))
    array([[1, 1, 2, 2],
           [1, 1, 2, 2]], dtype=int32)
    """
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    e = np.asarray(euler, float)
    ny, nx = valid.shape
    idx = np.arange(ny * nx).reshape(ny, nx)
    ei = np.nan_to_num(e)
    rows, cols = [], []
    for p, q in (((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
                 ((slice(0, -1), slice(None)), (slice(1, None), slice(None)))):
        ok = valid[p] & valid[q]
        mis = misorientation_deg(ei[p][ok], ei[q][ok])
        join = mis < threshold_deg
        rows.append(idx[p][ok][join])
        cols.append(idx[q][ok][join])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(ny * nx, ny * nx))
    _, comp = connected_components(graph, directed=False)
    comp = comp.reshape(ny, nx)
    labels = np.zeros((ny, nx), np.int32)
    first = {}
    for k in comp[valid]:
        if k not in first:
            first[k] = len(first) + 1
    lut = np.zeros(comp.max() + 1, np.int32)
    for k, v in first.items():
        lut[k] = v
    labels[valid] = lut[comp[valid]]
    if min_grain_px > 1:
        labels = _merge_small(labels, min_grain_px)
    return labels


def _merge_small(labels, min_px):
    from insitu.analysis.transport.microstructure import boundary_pixels

    for _ in range(10):
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        small = set(ids[counts < min_px].tolist())
        if not small:
            break
        bp = boundary_pixels(labels)
        size = dict(zip(ids.tolist(), counts.tolist()))
        changed = False
        for gid in sorted(small, key=lambda g: size[g]):
            sel_a, sel_b = bp["grain_a"] == gid, bp["grain_b"] == gid
            nbrs = np.concatenate([bp["grain_b"][sel_a], bp["grain_a"][sel_b]])
            nbrs = nbrs[nbrs != gid]
            if nbrs.size:
                labels[labels == gid] = np.bincount(nbrs).argmax()
                changed = True
        if not changed:
            break
    # renumber 1..n in order of first appearance
    flat = labels.ravel()
    _, first_idx = np.unique(flat, return_index=True)
    order = [flat[i] for i in sorted(first_idx) if flat[i] > 0]
    lut = np.zeros(flat.max() + 1, np.int32)
    lut[order] = np.arange(1, len(order) + 1)
    return lut[labels]


def mean_orientations(euler, labels):
    """Mean orientation per grain (symmetry-aware: each point is first moved to the symmetry-equivalent
    orientation closest to the grain's first point), as Bunge Euler angles.

    Returns
    -------
    grain_ids : ndarray of int32 (n,)
    euler_mean : ndarray (n, 3), radians
    """
    ids = np.unique(labels[labels > 0]).astype(np.int32)
    e = np.asarray(euler, float)
    out = np.zeros((ids.size, 3))
    flat_l = labels.ravel()
    g_all = euler_to_matrix(np.nan_to_num(e.reshape(-1, 3)))
    for k, gid in enumerate(ids):
        g = g_all[flat_l == gid]
        ref = g[0]
        # candidates S_i g; pick the one with the largest trace(S_i g ref^T)
        cand = np.einsum("sij,njk->nsik", SYMMETRY_32, g)
        score = np.einsum("nsik,jk->nsij", cand, ref)
        tr = np.trace(score, axis1=2, axis2=3)
        best = cand[np.arange(len(g)), tr.argmax(axis=1)]
        u, _, vt = np.linalg.svd(best.mean(axis=0))
        r = u @ vt
        if np.linalg.det(r) < 0:
            u[:, -1] *= -1
            r = u @ vt
        out[k] = matrix_to_euler(r)[0]
    return ids, out


def read_orientation_csv(path):
    """Orientation table for a label image: ``grain_id`` and either ``c_x, c_y, c_z`` or
    ``phi1, Phi, phi2`` (Bunge, radians; or ``phi1_deg, Phi_deg, phi2_deg``).

    Returns
    -------
    grain_ids : ndarray of int32, c_axis : ndarray (n, 3), euler : ndarray (n, 3) or None
    """
    import csv

    from insitu.analysis.transport.microstructure import c_axis_from_euler

    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise UserError(f"cannot read orientation table {path}: {exc}") from None
    if not rows:
        raise UserError(f"orientation table {path} is empty")
    cols = {k.strip(): k for k in rows[0]}
    if "grain_id" not in cols:
        raise UserError(f"orientation table {path}: missing column grain_id")

    def col(name):
        try:
            return np.array([float(r[cols[name]]) for r in rows])
        except ValueError as exc:
            raise UserError(f"orientation table {path}: column {name}: {exc}") from None

    ids = col("grain_id").astype(np.int32)
    euler = None
    if all(k in cols for k in ("c_x", "c_y", "c_z")):
        c = np.stack([col("c_x"), col("c_y"), col("c_z")], 1)
    elif all(k in cols for k in ("phi1", "Phi", "phi2")):
        euler = np.stack([col("phi1"), col("Phi"), col("phi2")], 1)
        c = c_axis_from_euler(euler)
    elif all(k in cols for k in ("phi1_deg", "Phi_deg", "phi2_deg")):
        euler = np.radians(np.stack([col("phi1_deg"), col("Phi_deg"), col("phi2_deg")], 1))
        c = c_axis_from_euler(euler)
    else:
        raise UserError(f"orientation table {path}: needs columns c_x, c_y, c_z or phi1, Phi, phi2 (radians)")
    return ids, c, euler
