"""The transport simulator: DC ion current through the voxelised lamella (docs/simulator.md, "Model").

>>> from insitu.analysis.lamella import voronoi_lamella
>>> r = simulate(voronoi_lamella((64, 64)), {"top": 0.0, "right": 1.0})   # doctest: +SKIP
>>> r.electrode_current["right"] > 0                                        # doctest: +SKIP
True

The problem is linear: :meth:`SimulationResult.scaled` gives the answer for other electrode
potentials (phi -> factor * phi + offset) without solving again.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from insitu.analysis import gb as gbmod
from insitu.analysis import network
from insitu.analysis.microstructure import Microstructure, boundary_pixels
from insitu.analysis.solver import DIRECT_MAX, build_system, solve
from insitu.errors import UserError

#: gb.csv columns (binding), then the extra ``blocking`` column
GB_COLUMNS = ("grain_a", "grain_b", "length_m", "j_a", "j_b", "jump", "delta_phi", "gb_type",
              "misorientation_deg", "plane_angle_deg", "blocking")


@dataclass
class SimulationResult:
    """Output of :func:`simulate` (SI units).

    Attributes
    ----------
    potential : ndarray (ny, nx)
        V; NaN where nothing conducts (vacuum, ZrO2, floating clusters).
    field : ndarray (ny, nx, 2)
        E = -grad phi (V/m), (Ex, Ey); 0 in electrodes, NaN where nothing conducts.
    current_density : ndarray (ny, nx, 2)
        (jx, jy), A/m^2; 0 where nothing conducts.
    electrode_current : dict name -> float
        Current (A) leaving each electrode into the specimen (high-potential electrode positive; sum 0).
    gb_table : dict of ndarray
        One row per pair of touching grains; columns :data:`GB_COLUMNS`.
    conductance_S : float or None
        |I| / |dV| when there are exactly two electrodes at different potentials.
    potentials : dict name -> float
    model : str
    voxel_size_m : float
    floating : list of dict
        Conducting clusters touching no electrode (excluded): ``size`` (voxels), ``grains`` (ids), ``y``, ``x``.
    info : dict
        Timings (s) and solver statistics.
    """

    potential: np.ndarray
    field: np.ndarray
    current_density: np.ndarray
    electrode_current: dict
    gb_table: dict
    conductance_S: float | None
    potentials: dict
    model: str
    voxel_size_m: float
    floating: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def j_abs(self) -> np.ndarray:
        """|j| (A/m^2) per voxel."""
        return np.hypot(self.current_density[..., 0], self.current_density[..., 1])

    def scaled(self, factor: float, offset: float = 0.0) -> "SimulationResult":
        """The result for electrode potentials ``factor * phi + offset`` (no new solve).

        Example
        -------
        >>> r10 = r.scaled(10.0)   # same geometry, 10x the bias   # doctest: +SKIP
        """
        f = float(factor)
        gt = dict(self.gb_table)
        for k in ("j_a", "j_b", "jump", "delta_phi"):
            gt[k] = self.gb_table[k] * f
        if f < 0 and "field_deg" in gt:  # the field reverses: sub-types that depend on its sense change
            gt["field_deg"] = (gt["field_deg"] + 180.0) % 360.0
            gt["gb_type"], gt["blocking"] = gbmod.classify(gt["theta_a_deg"], gt["theta_b_deg"], gt["normal_deg"],
                                                           gt["field_deg"], self.info.get("gb_tol_deg", 15.0))
        return replace(self, potential=self.potential * f + offset, field=self.field * f,
                       current_density=self.current_density * f,
                       electrode_current={k: v * f for k, v in self.electrode_current.items()},
                       gb_table=gt, potentials={k: v * f + offset for k, v in self.potentials.items()})


def _floating_clusters(grains, floating_mask) -> list:
    """The connected clusters of ``floating_mask`` (4-neighbours), in the raster order of their
    first voxel: ``size`` (voxels), ``grains`` (ids), ``y``, ``x`` (first voxel)."""
    from scipy import ndimage

    lab, _ = ndimage.label(floating_mask)
    out = []
    for k, box in enumerate(ndimage.find_objects(lab), start=1):   # each cluster within its bounding box
        sel = lab[box] == k
        ys, xs = np.nonzero(sel)                  # raster order inside the box = raster order overall
        out.append(dict(size=int(ys.size), grains=sorted(int(g) for g in np.unique(grains[box][sel])),
                        y=int(ys[0] + box[0].start), x=int(xs[0] + box[1].start)))
    return out


def simulate(micro: Microstructure, potentials: dict, model: str = "full", *, rtol: float = 1e-8,
             gb_tol_deg: float = 15.0, with_gb_table: bool = True,
             solver: str = "auto") -> SimulationResult:
    """Solve for potential, field and current density in ``micro`` with electrodes at ``potentials``.

    Parameters
    ----------
    micro : Microstructure
    potentials : dict name -> float
        Potential (V) of every electrode in ``micro.electrodes``.
    model : {"full", "diagonal"}
        "full": whole in-plane 2x2 conductivity tensor (9-point MFMFE scheme, see
        :mod:`insitu.analysis.network`); "diagonal": the paper's sigma_xx, sigma_yy 5-point network.
    rtol : float
        Relative residual of the linear solve.
    gb_tol_deg : float
        Tolerance of the GB classification (types I and II).
    with_gb_table : bool
        Compute the GB table (skip for speed when not needed).
    solver : {"auto", "direct", "mg", "amg", "reference"}
        "direct": SuperLU; "mg": structured multigrid-preconditioned CG
        (:mod:`insitu.analysis.multigrid`); "amg": pyamg-preconditioned CG; "auto": direct up to
        :data:`insitu.analysis.solver.DIRECT_MAX` unknowns, else "mg"; "reference": the benchmark
        baseline (link-by-link scipy assembly, pyamg Ruge-Stueben + CG; diagonal model only).

    Returns
    -------
    SimulationResult

    Example
    -------
    >>> r = simulate(voronoi_lamella((64, 64)), {"top": 0, "right": 1}, model="diagonal")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    micro.validate("microstructure")
    if model not in ("full", "diagonal"):
        raise UserError(f"unknown model '{model}' (use full or diagonal)")
    unknown_names = sorted(set(potentials) - set(micro.electrodes))
    if unknown_names:
        raise UserError(f"unknown electrode '{unknown_names[0]}' in potentials "
                        f"(the microstructure has {', '.join(sorted(micro.electrodes))})")
    missing = sorted(set(micro.electrodes) - set(potentials))
    if missing:
        raise UserError(f"no potential given for electrode '{missing[0]}'")
    pots = {k: float(potentials[k]) for k in micro.electrodes}
    for k, v in pots.items():
        if not np.isfinite(v):
            raise UserError(f"potential of electrode '{k}' is not a finite number")

    v = network.voxel_properties(micro, model)
    el = v.electrode >= 0
    alive = v.conducting | el
    floating_mask = alive & ~network.connected_to(alive, el)
    floating = []
    if floating_mask.any():
        floating = _floating_clusters(micro.grains, floating_mask)
        v.conducting &= ~floating_mask
        v.label[floating_mask] = 0
        for a in (v.rxx, v.ryy, v.rxy, v.sxx, v.syy, v.sxy):
            a[floating_mask] = 0.0
    t1 = time.perf_counter()

    fixed = np.full(micro.shape, np.nan)
    for i, name in enumerate(v.names):
        fixed[v.electrode == i] = pots[name]
    n_unknown = int(v.conducting.sum())
    method = solver if solver != "auto" else ("direct" if n_unknown <= DIRECT_MAX else "mg")
    info = {}
    stencil = network.assemble(v, micro) if method != "reference" else None
    if method == "reference":
        # the benchmark baseline: the paper's network assembled link by link with scipy, pyamg RS + CG
        import pyamg

        if model != "diagonal":
            raise UserError("solver 'reference' implements the diagonal model only")
        A_all = network.link_network(v, micro)
        u = np.flatnonzero(v.conducting.ravel())
        f = np.flatnonzero((v.electrode >= 0).ravel())
        A = A_all[u][:, u]
        b = -(A_all[u][:, f] @ fixed.ravel()[f])
        t2 = time.perf_counter()
        ml = pyamg.ruge_stuben_solver(A)
        res = []
        x = ml.solve(b, tol=rtol, accel="cg", residuals=res)
        info.update(method="reference", iterations=len(res) - 1,
                    residual=float(np.linalg.norm(b - A @ x) / max(np.linalg.norm(b), 1e-300)))
        nnz = int(A.nnz)
    elif method == "mg":
        from insitu.analysis.multigrid import solve_grid

        t2 = time.perf_counter()
        xgrid = solve_grid(stencil, v.conducting, fixed, rtol=rtol, info=info)
        x = None                      # the potential is read from the grid directly
        nnz = int(sum(a.size - np.count_nonzero(a == 0.0) for a in stencil.values()))   # 2x faster than on floats
    else:
        A, b, index = build_system(stencil, v.conducting, fixed)
        t2 = time.perf_counter()
        x = solve(A, b, rtol=rtol, info=info, method=method, anisotropic=model == "full")
        nnz = int(A.nnz)
    t3 = time.perf_counter()

    if x is None:
        phi, phi0 = network.potential_maps(xgrid, v.conducting, el, fixed)   # phi0: 0 where nothing conducts
    else:
        phi = np.full(micro.shape, np.nan)
        phi[v.conducting] = x
        phi[el] = fixed[el]
        phi0 = network.finite_potential(phi, v.conducting | el)
    if stencil is not None:
        currents = network.electrode_currents(stencil, phi0, v.electrode, v.names)
    else:
        net_out = (A_all @ phi0.ravel()).reshape(phi0.shape)
        currents = {name: float(net_out[v.electrode == i].sum()) for i, name in enumerate(v.names)}
    j = np.empty(micro.shape + (2,))                 # (jx, jy) written here, then masked in place
    fl = network.fluxes(v, micro, phi0, stencil=stencil, out=j)
    j, E = network.current_and_field(v, fl, out=j)
    conductance = None
    if len(pots) == 2:
        (na, va), (nb, vb) = pots.items()
        if va != vb:
            conductance = abs(currents[na]) / abs(va - vb)
    t4 = time.perf_counter()
    table = gb_table(micro, v, phi, j, E, fl, gb_tol_deg) if with_gb_table else _empty_table()
    t5 = time.perf_counter()
    info.update(gb_tol_deg=float(gb_tol_deg), t_setup_s=t1 - t0, t_assemble_s=t2 - t1, t_solve_s=t3 - t2, t_post_s=t4 - t3, t_gb_s=t5 - t4,
                unknowns=n_unknown, nnz=nnz)
    return SimulationResult(potential=phi, field=E, current_density=j, electrode_current=currents, gb_table=table,
                            conductance_S=conductance, potentials=pots, model=model,
                            voxel_size_m=float(micro.voxel_size_m), floating=floating, info=info)


def _empty_table():
    t = {k: np.zeros(0) for k in GB_COLUMNS}
    t["grain_a"] = np.zeros(0, np.int32)
    t["grain_b"] = np.zeros(0, np.int32)
    t["gb_type"] = np.zeros(0, dtype="<U8")
    t["blocking"] = np.zeros(0, bool)
    return t


def gb_table(micro, v, phi, j, E, fl, tol_deg=15.0) -> dict:
    """Per pair of touching grains: length, mean |j| on each side, jump, GB potential drop, type."""
    bp = boundary_pixels(v.label)
    if bp["grain_a"].size == 0:
        return _empty_table()
    ny, nx = micro.shape
    base = int(bp["grain_b"].max()) + 1          # = label.max() + 1 or less: any base > the ids works
    pair_key = bp["grain_a"].astype(np.int64) * base + bp["grain_b"]
    keys, inv = np.unique(pair_key, return_inverse=True)
    npair = keys.size
    ga = (keys // base).astype(np.int32)
    gbb = (keys % base).astype(np.int32)
    nfaces = np.bincount(inv, minlength=npair)
    # normal current density through each face, from grain a to grain b
    horiz = bp["axis"] == 1
    f = np.empty(inv.size)
    yh, xh = bp["ya"][horiz], np.minimum(bp["xa"][horiz], bp["xb"][horiz])
    f[horiz] = fl["fx"][yh, xh] * np.sign(bp["xb"][horiz] - bp["xa"][horiz])
    vert = ~horiz
    yv, xv = np.minimum(bp["ya"][vert], bp["yb"][vert]), bp["xa"][vert]
    f[vert] = fl["fy"][yv, xv] * np.sign(bp["yb"][vert] - bp["ya"][vert])
    r_gb = micro.gb_thickness_m / (micro.sigma_ip / micro.gb_ratio)
    delta_phi = np.bincount(inv, r_gb * f, minlength=npair) / nfaces
    jflat, eflat = j.reshape(-1, 2), E.reshape(-1, 2)      # views: |j| and E are read at boundary voxels only

    def side_mean(yy, xx):
        k = np.unique(inv.astype(np.int64) * (ny * nx) + yy.astype(np.int64) * nx + xx)
        p, lin = k // (ny * nx), k % (ny * nx)
        jj = jflat[lin]
        return np.bincount(p, np.hypot(jj[:, 0], jj[:, 1]), minlength=npair) / np.bincount(p, minlength=npair), p, lin

    j_a, pa, la = side_mean(bp["ya"], bp["xa"])
    j_b, pb, lb = side_mean(bp["yb"], bp["xb"])
    # local field: mean E over the boundary voxels of both sides
    pp, ll = np.concatenate([pa, pb]), np.concatenate([la, lb])
    cnt = np.bincount(pp, minlength=npair)
    ex = np.bincount(pp, np.nan_to_num(eflat[ll, 0]), minlength=npair) / cnt
    ey = np.bincount(pp, np.nan_to_num(eflat[ll, 1]), minlength=npair) / cnt
    # GB normal from a to b: sum of the face steps (a staircase sums to the mean normal)
    nxs = np.bincount(inv, (bp["xb"] - bp["xa"]).astype(float), minlength=npair)
    nys = np.bincount(inv, (bp["yb"] - bp["ya"]).astype(float), minlength=npair)
    normal_deg = np.degrees(np.arctan2(nys, nxs))
    field_deg = np.degrees(np.arctan2(ey, ex))
    cmap = micro.c_axis_map()
    ca = np.array([cmap[int(g)] for g in ga])
    cb = np.array([cmap[int(g)] for g in gbb])
    theta_a, theta_b = gbmod.trace_angle_deg(ca), gbmod.trace_angle_deg(cb)
    gb_type, blocking = gbmod.classify(theta_a, theta_b, normal_deg, field_deg, tol_deg)
    mis = np.full(npair, np.nan)
    if micro.euler_bunge is not None:
        from insitu.analysis.orientation import misorientation_deg

        emap = {int(g): micro.euler_bunge[i] for i, g in enumerate(micro.grain_ids)}
        mis = misorientation_deg(np.array([emap[int(g)] for g in ga]), np.array([emap[int(g)] for g in gbb]))
    return {"grain_a": ga, "grain_b": gbb, "length_m": nfaces * float(micro.voxel_size_m), "j_a": j_a, "j_b": j_b,
            "jump": j_a - j_b, "delta_phi": delta_phi, "gb_type": np.asarray(gb_type),
            "misorientation_deg": mis, "plane_angle_deg": gbmod.plane_angle_deg(ca, cb), "blocking": blocking,
            # extra (not in gb.csv): geometry used by the classification
            "theta_a_deg": theta_a, "theta_b_deg": theta_b, "normal_deg": normal_deg, "field_deg": field_deg}


def save_result(result: SimulationResult, out_dir) -> dict:
    """Write ``out_dir/result.h5`` and ``out_dir/gb.csv``; returns their paths.

    result.h5: ``potential`` (ny, nx), ``current_density`` (ny, nx, 2), ``field`` (ny, nx, 2),
    ``electrode_current/<name>`` (scalar, A); attrs model, voxel_size_m, potentials (JSON),
    conductance_S, floating (JSON).
    """
    import h5py

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h5 = out / "result.h5"
    with h5py.File(h5, "w") as f:
        for key in ("potential", "current_density", "field"):
            arr = getattr(result, key)
            # compress small results only: gzip costs seconds on a 2048^2 grid
            kw = dict(compression="gzip", compression_opts=1) if arr.size <= 2 ** 20 else {}
            f.create_dataset(key, data=arr, **kw)
        f["potential"].attrs["units"] = "V"
        f["current_density"].attrs["units"] = "A/m^2"
        f["field"].attrs["units"] = "V/m"
        g = f.create_group("electrode_current")
        for name, val in result.electrode_current.items():
            d = g.create_dataset(name, data=float(val))
            d.attrs["units"] = "A"
        f.attrs["model"] = result.model
        f.attrs["voxel_size_m"] = result.voxel_size_m
        f.attrs["potentials"] = json.dumps(result.potentials)
        f.attrs["conductance_S"] = np.nan if result.conductance_S is None else result.conductance_S
        f.attrs["floating"] = json.dumps(result.floating)
        f.attrs["info"] = json.dumps({k: (float(x) if isinstance(x, (int, float, np.floating, np.integer)) else str(x))
                                      for k, x in result.info.items()})
    csv_path = out / "gb.csv"
    write_gb_csv(result.gb_table, csv_path)
    return {"result": h5, "gb": csv_path}


def write_gb_csv(table: dict, path) -> None:
    """Write a GB table (dict of arrays) as CSV with the :data:`GB_COLUMNS` header."""
    n = len(table["grain_a"])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(GB_COLUMNS)
        for i in range(n):
            row = []
            for k in GB_COLUMNS:
                x = table[k][i]
                if k in ("grain_a", "grain_b"):
                    row.append(int(x))
                elif k == "gb_type":
                    row.append(str(x))
                elif k == "blocking":
                    row.append("true" if bool(x) else "false")
                else:
                    row.append(repr(float(x)))
            w.writerow(row)


def read_gb_csv(path) -> dict:
    """Read a gb.csv back into a dict of arrays."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    t = _empty_table()
    if not rows:
        return t
    for k in rows[0]:
        col = [r[k] for r in rows]
        if k in ("grain_a", "grain_b"):
            t[k] = np.array(col, np.int32)
        elif k == "gb_type":
            t[k] = np.array(col, dtype=str)
        elif k == "blocking":
            t[k] = np.array([c.strip().lower() == "true" for c in col])
        else:
            t[k] = np.array(col, float)
    return t


def load_result(out_dir) -> SimulationResult:
    """Read what :func:`save_result` wrote."""
    import h5py

    out = Path(out_dir)
    h5 = out / "result.h5"
    if not h5.is_file():
        raise UserError(f"no simulation result in {out} (result.h5 missing)")
    with h5py.File(h5, "r") as f:
        cond = float(f.attrs.get("conductance_S", np.nan))
        res = SimulationResult(
            potential=f["potential"][()], field=f["field"][()], current_density=f["current_density"][()],
            electrode_current={k: float(f["electrode_current"][k][()]) for k in f["electrode_current"]},
            gb_table=read_gb_csv(out / "gb.csv") if (out / "gb.csv").is_file() else _empty_table(),
            conductance_S=None if not np.isfinite(cond) else cond,
            potentials=json.loads(f.attrs.get("potentials", "{}")), model=str(f.attrs.get("model", "")),
            voxel_size_m=float(f.attrs.get("voxel_size_m", np.nan)),
            floating=json.loads(f.attrs.get("floating", "[]")), info=json.loads(f.attrs.get("info", "{}")))
    return res


def lone_electrode(potentials: dict) -> tuple[str, float, float] | None:
    """``(name, factor, offset)`` when one electrode alone is at the highest potential and all the
    others share one lower potential (always so for two electrodes at different potentials); else None.

    Then the result for ``potentials`` is the unit solution of that electrode (it at 1 V, the others
    at 0 V) times ``factor`` plus ``offset`` (see :func:`superpose`).

    >>> lone_electrode({"top": 0.5, "right": 3.0})
    ('right', 2.5, 0.5)
    >>> lone_electrode({"a": 0.0, "b": 1.0, "c": 2.0}) is None
    True
    """
    vals = {k: float(v) for k, v in potentials.items()}
    if len(vals) < 2:
        return None
    hi = max(vals.values())
    top = [k for k, v in vals.items() if v == hi]
    rest = {v for k, v in vals.items() if k not in top}
    if len(top) != 1 or len(rest) != 1:
        return None
    low = rest.pop()
    return top[0], hi - low, low


def unit_potentials(names, electrode: str) -> dict:
    """``electrode`` at 1 V, every other electrode in ``names`` at 0 V: one per-electrode solve.

    >>> unit_potentials(["top", "right"], "right")
    {'top': 0.0, 'right': 1.0}
    """
    return {str(n): (1.0 if n == electrode else 0.0) for n in names}


def superpose(units: dict, potentials: dict) -> SimulationResult:
    """The result for electrode ``potentials`` from per-electrode unit solutions, without a new solve.

    The network is linear: for any electrode potentials V the potential is
    phi = V_r + sum_k (V_k - V_r) phi_k, where phi_k is the solution with electrode k at 1 V and the
    others at 0 V (:func:`unit_potentials`), and so are the field, the current density and the
    electrode currents. The GB table holds mean |j| on each side, which is not linear in V; it is
    exact here because the potentials must have one electrode alone at the highest value and the
    others at one lower value (:func:`lone_electrode`; always true for two electrodes): the result
    is then that electrode's unit solution scaled by a positive factor.

    Parameters
    ----------
    units : dict name -> SimulationResult
        Unit solutions by electrode name; only the one named by :func:`lone_electrode` is used.
    potentials : dict name -> float
        Electrode potentials (V).

    Returns
    -------
    SimulationResult

    Raises
    ------
    UserError
        When the potentials have three or more distinct values (the GB table then needs a solve) or
        the unit solution needed is not in ``units``.

    Example
    -------
    >>> u = simulate(m, unit_potentials(m.electrodes, "right"))           # doctest: +SKIP
    >>> r = superpose({"right": u}, {"top": 0.0, "right": 12.0})  # = simulate(m, that)  # doctest: +SKIP
    """
    lone = lone_electrode(potentials)
    if lone is None:
        raise UserError("superposition of the GB table needs one electrode alone at the highest potential and "
                        f"the others at one lower potential, got {potentials}: solve with simulate()")
    name, factor, offset = lone
    if name not in units:
        raise UserError(f"no unit solution for electrode '{name}' (have {', '.join(sorted(units)) or 'none'})")
    unit = units[name]
    if set(unit.potentials) != set(potentials):
        raise UserError(f"the unit solution has electrodes {sorted(unit.potentials)}, the potentials name "
                        f"{sorted(potentials)}")
    res = unit.scaled(factor, offset)
    return replace(res, potentials={k: float(potentials[k]) for k in unit.potentials})
