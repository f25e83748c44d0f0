"""Grain-boundary classification (Ding et al. 2023, Figure 5), formalised for code.

Per GB: the conduction-plane traces of both grains in the lamella plane (angles theta_a, theta_b
mod 180 deg), the GB normal (from grain a to grain b) and the local field direction.

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

A grain whose c-axis is along the beam has no trace (its planes lie in the lamella and conduct in
every in-plane direction); its trace is then taken along the local field.

Conventions: angles in degrees, measured from +x (columns) towards +y (rows, down).
"""
from __future__ import annotations

import numpy as np

BLOCKING_TYPES = ("II b1", "III a2")


def trace_angle_deg(c_axis) -> np.ndarray:
    """Angle (deg, [0, 180)) of the conduction-plane (basal plane) trace in the lamella plane.

    The trace is the in-plane direction perpendicular to the projection of the c-axis; NaN when the
    c-axis is (within 1e-9) along the beam.

    Example
    -------
    >>> trace_angle_deg([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    array([90.,  0.])
    """
    c = np.asarray(c_axis, float).reshape(-1, 3)
    ang = np.degrees(np.arctan2(c[:, 0], -c[:, 1])) % 180.0
    ang[np.hypot(c[:, 0], c[:, 1]) < 1e-9] = np.nan
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
        Trace angles (deg) of the conduction planes of grains a and b (NaN: no trace).
    normal_deg : array_like
        Direction (deg) of the GB normal pointing from grain a into grain b.
    field_deg : array_like
        Direction (deg) of the local electric field.
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
    >>> classify([30.0], [150.0], [90.0], [0.0])[0][0]      # chevron, field along the GB
    'III a2'
    """
    ta, tb, nd, fd = np.broadcast_arrays(*(np.asarray(x, float) for x in (theta_a, theta_b, normal_deg, field_deg)))
    ta = np.where(np.isnan(ta), fd % 180.0, ta)
    tb = np.where(np.isnan(tb), fd % 180.0, tb)
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
    gb_type = np.char.add(np.char.add(np.char.add(main, " "), sub), index.astype(str))
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
