"""The microstructure of a lamella on a voxel grid, and its HDF5 file.

Binding file layout (any HDF5 group may hold it)::

    /grains                   int32 (ny, nx): 0 vacuum, >0 grain id, -1 blocking (ZrO2), -2 backbone
    /orientations/grain_id    int32 (n,)
    /orientations/c_axis      float64 (n, 3) unit c-axis, sample frame (x = column, y = row down, z = beam)
      or /orientations/euler_bunge  float64 (n, 3) radians; c = (sin f1 sin F, -cos f1 sin F, cos F)
    /electrodes/<name>        bool (ny, nx): ideal conductors at that electrode's potential
    attrs: voxel_size_m (required), thickness_m, sigma_ip (S/m), anisotropy (sigma_ip/sigma_op),
           gb_ratio (sigma_ip/sigma_GB), gb_thickness_m, backbone_ratio (sigma_ip/sigma_backbone)

Every problem with a file or an in-memory :class:`Microstructure` is reported
as a one-line :class:`insitu.core.errors.UserError` naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from insitu.core.errors import UserError

VACUUM = 0
ZRO2 = -1
BACKBONE = -2

#: default attribute values (SI units), per the binding layout
DEFAULTS = dict(sigma_ip=1.0, anisotropy=1000.0, gb_ratio=20.0, gb_thickness_m=1e-9, backbone_ratio=250.0)


def c_axis_from_euler(euler_bunge) -> np.ndarray:
    """Unit c-axis in the sample frame from Bunge Euler angles (radians).

    Parameters
    ----------
    euler_bunge : array_like, shape (n, 3)
        (phi1, Phi, phi2) in radians.

    Returns
    -------
    ndarray, shape (n, 3)
        c = (sin phi1 sin Phi, -cos phi1 sin Phi, cos Phi).

    Example
    -------
    >>> c_axis_from_euler([[0.0, 0.0, 0.0]])
    array([[ 0., -0.,  1.]])
    """
    e = np.asarray(euler_bunge, dtype=float).reshape(-1, 3)
    p1, P = e[:, 0], e[:, 1]
    return np.stack([np.sin(p1) * np.sin(P), -np.cos(p1) * np.sin(P), np.cos(P)], axis=1)


@dataclass
class Microstructure:
    """A voxelised lamella: grain map, grain c-axes, electrodes and material constants.

    Attributes
    ----------
    grains : ndarray of int32, shape (ny, nx)
        0 vacuum, >0 grain id, -1 blocking phase (ZrO2), -2 backbone.
    grain_ids : ndarray of int32, shape (n,)
    c_axis : ndarray of float64, shape (n, 3)
        Unit c-axis of each grain in the sample frame (x = column, y = row, down; z = beam).
    electrodes : dict of str -> ndarray of bool, shape (ny, nx)
    voxel_size_m : float
        Voxel edge h (m).
    thickness_m : float
        Lamella thickness (m); defaults to ``voxel_size_m``.
    sigma_ip, anisotropy, gb_ratio, gb_thickness_m, backbone_ratio : float
        In-plane conductivity (S/m), sigma_ip/sigma_op, sigma_ip/sigma_GB, GB thickness (m),
        sigma_ip/sigma_backbone.
    euler_bunge : ndarray, shape (n, 3), optional
        Full orientations (radians) when known; used for misorientation angles.
    """

    grains: np.ndarray
    grain_ids: np.ndarray
    c_axis: np.ndarray
    electrodes: dict = field(default_factory=dict)
    voxel_size_m: float = 1e-9
    thickness_m: float | None = None
    sigma_ip: float = DEFAULTS["sigma_ip"]
    anisotropy: float = DEFAULTS["anisotropy"]
    gb_ratio: float = DEFAULTS["gb_ratio"]
    gb_thickness_m: float = DEFAULTS["gb_thickness_m"]
    backbone_ratio: float = DEFAULTS["backbone_ratio"]
    euler_bunge: np.ndarray | None = None

    def __post_init__(self):
        self.grains = np.asarray(self.grains, dtype=np.int32)
        self.grain_ids = np.asarray(self.grain_ids, dtype=np.int32).reshape(-1)
        self.c_axis = np.asarray(self.c_axis, dtype=np.float64).reshape(-1, 3) if np.size(self.c_axis) else \
            np.zeros((0, 3))
        self.electrodes = {str(k): np.asarray(v, dtype=bool) for k, v in dict(self.electrodes).items()}
        if self.thickness_m is None:
            self.thickness_m = self.voxel_size_m
        if self.euler_bunge is not None:
            self.euler_bunge = np.asarray(self.euler_bunge, dtype=np.float64).reshape(-1, 3)

    @property
    def shape(self) -> tuple:
        return tuple(self.grains.shape)

    def c_axis_map(self) -> dict:
        """``{grain_id: c_axis}`` for quick look-up."""
        return {int(g): self.c_axis[i] for i, g in enumerate(self.grain_ids)}

    def validate(self, source: str = "microstructure") -> "Microstructure":
        """Check consistency; raise a one-line UserError naming the first problem. Returns self."""
        validate(self, source)
        return self


def validate(m: Microstructure, source: str = "microstructure") -> None:
    """Raise :class:`UserError` (one line, naming ``source``) when ``m`` is inconsistent."""
    g = m.grains
    if g.ndim != 2 or g.size == 0:
        raise UserError(f"{source}: /grains must be a non-empty 2-D array, got shape {g.shape}")
    bad = np.unique(g[g < BACKBONE]) if g.min() < BACKBONE else np.zeros(0, g.dtype)
    if bad.size:
        raise UserError(f"{source}: /grains holds unknown codes {bad[:5].tolist()} (allowed: 0, >0, -1, -2)")
    for name, val in (("voxel_size_m", m.voxel_size_m), ("thickness_m", m.thickness_m), ("sigma_ip", m.sigma_ip),
                      ("anisotropy", m.anisotropy), ("gb_ratio", m.gb_ratio), ("gb_thickness_m", m.gb_thickness_m),
                      ("backbone_ratio", m.backbone_ratio)):
        if not (np.isfinite(val) and val > 0) and not (name == "gb_thickness_m" and val == 0):
            raise UserError(f"{source}: attribute {name} must be a positive number, got {val!r}")
    if m.c_axis.shape != (m.grain_ids.size, 3):
        raise UserError(f"{source}: /orientations has {m.grain_ids.size} grain ids but c_axis of shape "
                        f"{m.c_axis.shape}")
    uniq, counts = np.unique(m.grain_ids, return_counts=True)
    if np.any(counts > 1):
        raise UserError(f"{source}: /orientations/grain_id repeats id {int(uniq[counts > 1][0])}")
    if not np.all(np.isfinite(m.c_axis)):
        i = int(np.nonzero(~np.all(np.isfinite(m.c_axis), axis=1))[0][0])
        raise UserError(f"{source}: c-axis of grain {int(m.grain_ids[i])} is not finite")
    norms = np.linalg.norm(m.c_axis, axis=1)
    nonunit = np.abs(norms - 1.0) > 1e-6
    if np.any(nonunit):
        i = int(np.nonzero(nonunit)[0][0])
        raise UserError(f"{source}: c-axis of grain {int(m.grain_ids[i])} is not a unit vector "
                        f"(|c| = {norms[i]:.6g}; {int(nonunit.sum())} such grain(s))")
    present = _values_present(g)
    missing = np.setdiff1d(present[present > 0], m.grain_ids)
    if missing.size:
        raise UserError(f"{source}: grain ids {missing[:10].tolist()}{'...' if missing.size > 10 else ''} "
                        f"in /grains have no orientation")
    if not m.electrodes:
        raise UserError(f"{source}: no electrodes defined (/electrodes/<name> needed)")
    names = list(m.electrodes)
    conducting = (g > 0) | (g == BACKBONE)
    any_el = np.zeros(g.shape, bool)
    for name in names:
        e = m.electrodes[name]
        if e.shape != g.shape:
            raise UserError(f"{source}: electrode '{name}' has shape {e.shape}, /grains has {g.shape}")
        if not e.any():
            raise UserError(f"{source}: electrode '{name}' is empty")
        overlap = any_el & e
        if overlap.any():
            other = next(n for n in names if n != name and (m.electrodes[n] & e).any())
            raise UserError(f"{source}: electrodes '{other}' and '{name}' overlap at {int(overlap.sum())} voxel(s)")
        any_el |= e
    for name in names:
        e = m.electrodes[name]
        nb = np.zeros(g.shape, bool)
        nb[1:, :] |= e[:-1, :]
        nb[:-1, :] |= e[1:, :]
        nb[:, 1:] |= e[:, :-1]
        nb[:, :-1] |= e[:, 1:]
        if not (nb & conducting & ~any_el).any():
            raise UserError(f"{source}: electrode '{name}' touches no conducting voxel (grain or backbone)")


def _values_present(a) -> np.ndarray:
    """Sorted distinct values of ``a``, from the first value of each run in raster order (maps of
    large regions have few runs: much cheaper than sorting or counting every voxel)."""
    d = np.ravel(a)
    if d.size == 0:
        return d[:0]
    starts = np.flatnonzero(d[1:] != d[:-1]) + 1
    return np.unique(np.concatenate([d[:1], d[starts]]))


def boundary_pixels(grains) -> dict:
    """Every voxel face shared by two different grains (ids > 0).

    Parameters
    ----------
    grains : ndarray of int, shape (ny, nx)

    Returns
    -------
    dict of ndarray
        ``y``, ``x``: face mid-points in pixel coordinates (pixel centres at integers, so one of
        them is a half-integer); ``grain_a`` < ``grain_b``: the two grains; ``axis``: 1 for a face
        between horizontal neighbours (normal along x), 0 between vertical neighbours (normal along y);
        ``ya, xa, yb, xb``: the integer voxels on the grain_a and grain_b sides.

    Example
    -------
    >>> bp = boundary_pixels(np.array([[1, 2], [1, 2]]))
    >>> bp["x"], bp["grain_a"], bp["grain_b"]
    (array([0.5, 0.5]), array([1, 1], dtype=int32), array([2, 2], dtype=int32))
    """
    g = np.asarray(grains)
    out = {k: [] for k in ("y", "x", "grain_a", "grain_b", "axis", "ya", "xa", "yb", "xb")}
    for axis in (1, 0):
        if axis == 1:
            p, q = g[:, :-1], g[:, 1:]
        else:
            p, q = g[:-1, :], g[1:, :]
        sel = (p > 0) & (q > 0) & (p != q)
        yy, xx = np.nonzero(sel)
        y2, x2 = (yy, xx + 1) if axis == 1 else (yy + 1, xx)
        gp, gq = p[sel].astype(np.int32), q[sel].astype(np.int32)
        swap = gp > gq
        out["y"].append((yy + y2) / 2.0)
        out["x"].append((xx + x2) / 2.0)
        out["grain_a"].append(np.where(swap, gq, gp))
        out["grain_b"].append(np.where(swap, gp, gq))
        out["axis"].append(np.full(yy.size, axis, np.int8))
        out["ya"].append(np.where(swap, y2, yy))
        out["xa"].append(np.where(swap, x2, xx))
        out["yb"].append(np.where(swap, yy, y2))
        out["xb"].append(np.where(swap, xx, x2))
    return {k: np.concatenate(v) for k, v in out.items()}


def _open(path_or_group, mode):
    import h5py

    if isinstance(path_or_group, (str, Path)):
        try:
            return h5py.File(path_or_group, mode), True
        except (OSError, FileNotFoundError) as exc:
            raise UserError(f"cannot open microstructure file {path_or_group}: {exc}") from None
    return path_or_group, False


def read_microstructure(path_or_group) -> Microstructure:
    """Read (and validate) a microstructure from a file path or an open h5py group.

    Example
    -------
    >>> m = read_microstructure("micro.h5")   # doctest: +SKIP
    """
    import h5py

    f, owned = _open(path_or_group, "r")
    source = str(path_or_group) if owned else f"microstructure group {f.name}"
    try:
        if "grains" not in f or not isinstance(f["grains"], h5py.Dataset):
            raise UserError(f"{source}: missing dataset /grains")
        grains = f["grains"][()]
        if "orientations" not in f or "grain_id" not in f["orientations"]:
            raise UserError(f"{source}: missing dataset /orientations/grain_id")
        o = f["orientations"]
        ids = o["grain_id"][()]
        euler = o["euler_bunge"][()] if "euler_bunge" in o else None
        if "c_axis" in o:
            c = o["c_axis"][()]
        elif euler is not None:
            c = c_axis_from_euler(euler)
        else:
            raise UserError(f"{source}: missing dataset /orientations/c_axis (or /orientations/euler_bunge)")
        if euler is not None and np.shape(euler) != (np.size(ids), 3):
            raise UserError(f"{source}: /orientations/euler_bunge has shape {np.shape(euler)}, "
                            f"expected ({np.size(ids)}, 3)")
        if "electrodes" not in f or not len(f["electrodes"]):
            raise UserError(f"{source}: missing group /electrodes (at least one /electrodes/<name>)")
        electrodes = {name: f["electrodes"][name][()].astype(bool) for name in f["electrodes"]}
        a = f.attrs
        if "voxel_size_m" not in a:
            raise UserError(f"{source}: missing attribute voxel_size_m")
        kw = {k: float(a[k]) for k in DEFAULTS if k in a}
        vs = float(a["voxel_size_m"])
        if "thickness_m" not in a:
            import warnings

            warnings.warn(f"{source}: no thickness_m attribute; the lamella is taken to be one voxel "
                          f"({vs:.4g} m) thick", stacklevel=2)
        m = Microstructure(grains=grains, grain_ids=ids, c_axis=c, electrodes=electrodes, voxel_size_m=vs,
                           thickness_m=float(a["thickness_m"]) if "thickness_m" in a else vs,
                           euler_bunge=euler, **kw)
    finally:
        if owned:
            f.close()
    return m.validate(source)


def write_microstructure(path_or_group, m: Microstructure) -> None:
    """Write ``m`` in the binding layout to a new file (overwritten) or into an open h5py group.

    Example
    -------
    >>> write_microstructure("micro.h5", voronoi_lamella((64, 64)))   # doctest: +SKIP
    """
    m.validate("microstructure to write")
    f, owned = _open(path_or_group, "w")
    try:
        for key in ("grains", "orientations", "electrodes"):
            if key in f:
                del f[key]
        f.create_dataset("grains", data=m.grains.astype(np.int32), compression="gzip", compression_opts=4)
        o = f.create_group("orientations")
        o.create_dataset("grain_id", data=m.grain_ids.astype(np.int32))
        o.create_dataset("c_axis", data=m.c_axis.astype(np.float64))
        if m.euler_bunge is not None:
            o.create_dataset("euler_bunge", data=m.euler_bunge.astype(np.float64))
        e = f.create_group("electrodes")
        for name, mask in m.electrodes.items():
            e.create_dataset(name, data=mask.astype(bool), compression="gzip", compression_opts=4)
        f.attrs["voxel_size_m"] = float(m.voxel_size_m)
        f.attrs["thickness_m"] = float(m.thickness_m)
        for k in DEFAULTS:
            f.attrs[k] = float(getattr(m, k))
    finally:
        if owned:
            f.close()
