"""Orientation maps: loading .ang/.ctf (orix), grain segmentation, mean orientation, misorientation.

The phase is treated as Na-beta''-alumina (trigonal, R-3m; Laue group -3m, proper point group 32)
whatever the file says. Orientations are Bunge Euler angles (radians) in orix's convention
(lab -> crystal), so the c-axis in the sample frame is (sin f1 sin F, -cos f1 sin F, cos F).

orix is imported only where a map is read (its import takes seconds); the misorientation used by the
simulator's GB table is plain numpy with the point-group-32 operators (checked against orix in the tests).
"""
from __future__ import annotations

import numpy as np


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
