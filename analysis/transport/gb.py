"""Grain-boundary classification (Ding et al. 2023, Figure 5), formalised for code.

Per GB: the conduction-plane traces of both grains in the lamella plane (angles theta_a, theta_b
mod 180 deg), the GB normal (from grain a to grain b) and the direction of the *applied* field: the
field of the same electrodes in a uniform isotropic lamella, as the paper reasons (not the local
field in the boundary voxels, which the across-plane component of the anisotropic grains dominates).

* delta = angle between the two traces in [0, 90]: Type I (delta <= tol), II (delta >= 90 - tol),
  III (between). ``tol_deg`` defaults to 15.
* Index 1: field across the GB (angle between field and GB tangent > 45 deg); 2: along it.
* Sub-types:
  - I a: the (parallel) planes run along the GB (mean trace within 45 deg of the tangent);
    I b: they cross the GB.
  - II b: one grain's planes run along the GB (its trace within 22.5 deg of the tangent, so the
    other grain's planes point at the GB); II a: otherwise (both at about 45 deg).
  - III, index 2: a = converging: in both grains the field drives ions along their planes *into*
    the GB; b = not converging. III, index 1: a = the traces tilt to opposite sides of the GB
    normal (mirror-like, "chevron"), b = tilted the same way.
* Blocking (filament-prone): II b1 and III a2.

A grain whose c-axis is within ``beam_tol_deg`` (default 15 deg) of the beam has no meaningful trace
(its planes lie nearly in the lamella and conduct in every in-plane direction): a GB with such a
grain gets the type "no trace" and is never blocking.

Conventions: angles in degrees, measured from +x (columns) towards +y (rows, down).
"""
from __future__ import annotations

import numpy as np

BLOCKING_TYPES = ("II b1", "III a2")


NO_TRACE = "no trace"


def trace_angle_deg(c_axis, beam_tol_deg: float = 0.0) -> np.ndarray:
    """Angle (deg, [0, 180)) of the conduction-plane (basal plane) trace in the lamella plane.

    The trace is the in-plane direction perpendicular to the projection of the c-axis; NaN when the
    c-axis is within ``beam_tol_deg`` of the beam (or, for 0, within 1e-9 of it).

    Example
    -------
    >>> trace_angle_deg([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    array([90.,  0.])
    >>> trace_angle_deg([[0.05, 0.0, 0.9987]], beam_tol_deg=15.0)     # 2.9 deg from the beam
    array([nan])
    """
    c = np.asarray(c_axis, float).reshape(-1, 3)
    ang = np.degrees(np.arctan2(c[:, 0], -c[:, 1])) % 180.0
    r = np.hypot(c[:, 0], c[:, 1])
    ang[r < 1e-9] = np.nan
    if beam_tol_deg > 0:
        ang[np.degrees(np.arctan2(r, np.abs(c[:, 2]))) < beam_tol_deg] = np.nan
    return np.where(np.isclose(ang, 180.0), 0.0, ang)


def _axial_diff(a, b):
    """Smallest angle (deg, [0, 90]) between two axial directions (mod 180)."""
    d = np.abs((np.asarray(a) - np.asarray(b)) % 180.0)
    return np.minimum(d, 180.0 - d)


def _signed_axial(a, ref):
    """Signed angle of axis ``a`` relative to axis ``ref`` in (-90, 90]."""
    d = (np.asarray(a) - np.asarray(ref) + 90.0) % 180.0 - 90.0
    return np.where(d == -90.0, 90.0, d)


def classify(theta_a, theta_b, normal_deg, field_deg, tol_deg: float = 15.0):
    """Classify GBs.

    Parameters
    ----------
    theta_a, theta_b : array_like
        Trace angles (deg) of the conduction planes of grains a and b (NaN: no trace; the GB is
        then of type "no trace", not blocking).
    normal_deg : array_like
        Direction (deg) of the GB normal pointing from grain a into grain b.
    field_deg : array_like
        Direction (deg) of the applied electric field at the GB.
    tol_deg : float
        Tolerance for "parallel" (I) and "perpendicular" (II).

    Returns
    -------
    gb_type : ndarray of str
        e.g. "III a2".
    blocking : ndarray of bool
        True for II b1 and III a2.

    Example
    -------
    >>> str(classify([30.0], [150.0], [90.0], [0.0])[0][0])      # chevron, field along the GB
    'III a2'
    """
    ta, tb, nd, fd = np.broadcast_arrays(*(np.asarray(x, float) for x in (theta_a, theta_b, normal_deg, field_deg)))
    no_trace = np.isnan(ta) | np.isnan(tb)
    ta = np.where(np.isnan(ta), 0.0, ta)
    tb = np.where(np.isnan(tb), 0.0, tb)
    tangent = (nd + 90.0) % 180.0
    delta = _axial_diff(ta, tb)
    index = np.where(_axial_diff(fd, tangent) > 45.0, 1, 2)
    main = np.where(delta <= tol_deg, "I", np.where(delta >= 90.0 - tol_deg, "II", "III"))

    # Type I: mean trace (axial mean) relative to the tangent
    mean_t = (ta + _signed_axial(tb, ta) / 2.0) % 180.0
    sub_i = np.where(_axial_diff(mean_t, tangent) < 45.0, "a", "b")
    # Type II: one trace along the GB -> b
    sub_ii = np.where(np.minimum(_axial_diff(ta, tangent), _axial_diff(tb, tangent)) < 22.5, "b", "a")
    # Type III
    n = np.stack([np.cos(np.radians(nd)), np.sin(np.radians(nd))])
    e = np.stack([np.cos(np.radians(fd)), np.sin(np.radians(fd))])

    def along_field(theta):
        t = np.stack([np.cos(np.radians(theta)), np.sin(np.radians(theta))])
        s = np.sign((t * e).sum(0))
        return t * np.where(s == 0, 1.0, s)

    va, vb = along_field(ta), along_field(tb)
    converging = ((va * n).sum(0) > 1e-9) & ((vb * n).sum(0) < -1e-9)
    chevron = _signed_axial(ta, tangent) * _signed_axial(tb, tangent) < 0
    sub_iii = np.where(index == 2, np.where(converging, "a", "b"), np.where(chevron, "a", "b"))
    sub = np.where(main == "I", sub_i, np.where(main == "II", sub_ii, sub_iii))
    gb_type = np.char.add(np.char.add(np.char.add(main, " "), sub), index.astype(str)).astype("<U8")
    gb_type[no_trace] = NO_TRACE
    blocking = np.isin(gb_type, BLOCKING_TYPES)
    return gb_type.astype(object).astype(str), blocking


def plane_angle_deg(c_a, c_b) -> np.ndarray:
    """Angle (deg, [0, 90]) between the conduction planes of two grains = angle between c-axes (axial).

    Example
    -------
    >>> plane_angle_deg([[0, 0, 1]], [[1, 0, 0]])
    array([90.])
    """
    ca = np.asarray(c_a, float).reshape(-1, 3)
    cb = np.asarray(c_b, float).reshape(-1, 3)
    cos = np.abs(np.sum(ca * cb, axis=1)) / (np.linalg.norm(ca, axis=1) * np.linalg.norm(cb, axis=1))
    return np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))


def boundary_geometry(faces, pair, n_pairs: int, radius: int = 5):
    """Length (in voxel edges) and mean normal of each GB, from its smoothed boundary.

    A staircase of voxel faces is as long as |dx| + |dy|, up to 1.41x the GB it approximates. Here
    each face counts for |sum of the unit face steps (grain a -> grain b)| / (number of faces) over
    the faces of the same GB within ``radius`` voxels (a box): the chord-to-staircase ratio of the
    boundary around it (exact for a straight GB up to one step per window: faces of each axis occur
    in proportion to the normal's component along it).

    Parameters
    ----------
    faces : dict of ndarray
        :func:`insitu.analysis.transport.microstructure.boundary_pixels` output.
    pair : ndarray of int
        GB index (0 .. n_pairs - 1) of every face.
    n_pairs : int
    radius : int
        Half-width (voxels) of the smoothing window.

    Returns
    -------
    length : ndarray (n_pairs,)
        In voxel edges (multiply by the voxel size for metres).
    normal_deg : ndarray (n_pairs,)
        Direction (deg, from +x towards +y) of the mean normal from grain a to grain b.

    Example
    -------
    >>> from insitu.analysis.transport.microstructure import boundary_pixels
    >>> yy, xx = np.mgrid[:200, :200]
    >>> g = np.where(xx < 0.5 * yy + 50, 1, 2)             # straight GB, 63.4 deg from +x
    >>> bp = boundary_pixels(g)
    >>> length, normal = boundary_geometry(bp, np.zeros(bp["x"].size, int), 1)
    >>> round(float(length[0] / (200 * np.hypot(1, 0.5))), 2), round(float(normal[0]), 1)
    (1.01, -26.6)
    """
    ex = (faces["xb"] - faces["xa"]).astype(float)
    ey = (faces["yb"] - faces["ya"]).astype(float)
    nxs = np.bincount(pair, ex, minlength=n_pairs)
    nys = np.bincount(pair, ey, minlength=n_pairs)
    normal_deg = np.degrees(np.arctan2(nys, nxs))
    length = np.zeros(n_pairs)
    if pair.size == 0:
        return length, normal_deg
    # doubled coordinates: face mid-points on an integer grid
    Y = np.rint(2 * faces["y"]).astype(np.int64)
    X = np.rint(2 * faces["x"]).astype(np.int64)
    order = np.argsort(pair, kind="stable")
    bounds = np.searchsorted(pair[order], np.arange(n_pairs + 1))
    w = 4 * radius + 1
    for k in range(n_pairs):
        idx = order[bounds[k]:bounds[k + 1]]
        if idx.size == 0:
            continue
        yk, xk = Y[idx] - Y[idx].min(), X[idx] - X[idx].min()
        shape = (int(yk.max()) + 1, int(xk.max()) + 1)
        sx = _box_sum(yk, xk, ex[idx], shape, w)
        sy = _box_sum(yk, xk, ey[idx], shape, w)
        count = _box_sum(yk, xk, np.ones(idx.size), shape, w)
        length[k] = np.sum(np.hypot(sx, sy) / count)
    return length, normal_deg


def _box_sum(yk, xk, val, shape, w):
    """Sum of ``val`` (placed at (yk, xk) on a grid of ``shape``) in a w x w box around each point."""
    img = np.zeros((shape[0] + w, shape[1] + w))
    np.add.at(img, (yk + w // 2 + 1, xk + w // 2 + 1), val)   # one-based, padded: summed-area table
    sat = img.cumsum(0).cumsum(1)
    y0, x0 = yk + 1, xk + 1                    # window [yk - w//2, yk + w//2] in padded coordinates
    y1, x1 = yk + w, xk + w
    return sat[y1, x1] - sat[y0 - 1, x1] - sat[y1, x0 - 1] + sat[y0 - 1, x0 - 1]
