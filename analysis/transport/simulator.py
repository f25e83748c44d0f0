"""The transport simulator: DC ion current through the voxelised lamella (docs/simulator.md, "Model").

>>> from insitu.analysis.transport.lamella import voronoi_lamella
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
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from insitu.analysis.transport import gb as gbmod
from insitu.analysis.transport import network
from insitu.analysis.transport.microstructure import Microstructure, boundary_pixels
from insitu.analysis.transport.solver import DIRECT_MAX, build_system, solve
from insitu.core.errors import UserError

#: gb.csv columns: the binding ones (DESIGN.md), then extra ones (docs/simulator.md, "Outputs")
GB_COLUMNS = ("grain_a", "grain_b", "length_m", "j_a", "j_b", "jump", "delta_phi", "gb_type",
              "misorientation_deg", "plane_angle_deg", "blocking",
              "jump_flow", "blockade", "applied_field_deg", "local_field_deg", "normal_deg",
              "theta_a_deg", "theta_b_deg")
#: signed columns that scale with the bias (SimulationResult.scaled: times the factor)
_LINEAR = ("delta_phi", "jump_flow")
#: columns of |j| means and their difference (SimulationResult.scaled: times |factor|)
_MAGNITUDE = ("j_a", "j_b", "jump")


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
        Timings (s), solver statistics and ``gb_band_m``, the width (m) of the bands beside the GBs
        (with a GB table).
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

        Signed quantities (potential differences, field, current density, electrode currents,
        ``delta_phi``, ``jump_flow``) scale by ``factor``; the |j| means ``j_a``, ``j_b`` and their
        difference ``jump`` by ``|factor|``. A negative factor reverses the field: ``blockade`` changes
        sign, the field angles turn by 180 degrees and the GB types are classified again.

        Example
        -------
        >>> r10 = r.scaled(10.0)   # same geometry, 10x the bias   # doctest: +SKIP
        """
        f = float(factor)
        gt = dict(self.gb_table)
        for k in _LINEAR:
            gt[k] = self.gb_table[k] * f
        for k in _MAGNITUDE:
            gt[k] = self.gb_table[k] * abs(f)
        if f < 0:  # the field reverses: sub-types that depend on its sense change, pile-up becomes depletion
            gt["blockade"] = -gt["blockade"]
            for k in ("applied_field_deg", "local_field_deg"):
                gt[k] = (gt[k] + 360.0) % 360.0 - 180.0
            gt["gb_type"], gt["blocking"] = gbmod.classify(gt["theta_a_deg"], gt["theta_b_deg"], gt["normal_deg"],
                                                           gt["applied_field_deg"], self.info.get("gb_tol_deg", 15.0))
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


@dataclass
class LinearProblem:
    """What a linear solver of :data:`SOLVERS` is given: the stencil (:func:`network.assemble`) of
    the voxels ``voxels`` of ``micro``, the potential (V) of the fixed (electrode) voxels (NaN
    elsewhere), the model name and the relative residual to reach."""

    micro: Microstructure
    stencil: dict
    voxels: network.Voxels
    fixed: np.ndarray
    model: str
    rtol: float


def _solve_mg(p: LinearProblem, info: dict) -> np.ndarray:
    """Structured multigrid-preconditioned CG on the grid (:func:`multigrid.solve_grid`)."""
    from insitu.analysis.transport.multigrid import solve_grid

    x = solve_grid(p.stencil, p.voxels.conducting, p.fixed, rtol=p.rtol, info=info)
    info["nnz"] = int(sum(a.size - np.count_nonzero(a == 0.0) for a in p.stencil.values()))   # 2x faster than on floats
    return x


def _sparse_solver(method: str):
    def run(p: LinearProblem, info: dict) -> np.ndarray:
        A, b, index = build_system(p.stencil, p.voxels.conducting, p.fixed)
        x = solve(A, b, rtol=p.rtol, info=info, method=method, anisotropic=p.model == "full")
        info["nnz"] = int(A.nnz)
        out = np.zeros(index.shape)
        out[p.voxels.conducting] = x
        return out

    run.__doc__ = f"scipy CSR system of the unknowns, :func:`solver.solve` with method {method!r}."
    return run


#: linear solvers by name: each ``f(problem: LinearProblem, info: dict) -> potential grid`` (V on the
#: unknown voxels; any value elsewhere), putting ``method``, ``iterations``, ``residual`` and ``nnz``
#: (stored couplings) into ``info``
SOLVERS = {"direct": _sparse_solver("direct"), "mg": _solve_mg, "amg": _sparse_solver("amg")}


def simulate(micro: Microstructure, potentials: dict, model: str = "full", *, rtol: float = 1e-8,
             gb_tol_deg: float = 15.0, beam_tol_deg: float = 15.0, gb_band_m: float | None = None,
             with_gb_table: bool = True, solver: str = "auto", refine: int | str = 1,
             refine_sigma_px: float = 1.0, refine_laminate: bool = True) -> SimulationResult:
    """Solve for potential, field and current density in ``micro`` with electrodes at ``potentials``.

    Parameters
    ----------
    micro : Microstructure
    potentials : dict name -> float
        Potential (V) of every electrode in ``micro.electrodes``.
    model : {"full", "paper"}
        "full": the thin-film 2x2 conductivity tensor (J_z = 0; 9-point MFMFE scheme, see
        :mod:`insitu.analysis.transport.network`); "paper": the seed paper's sigma_xx, sigma_yy from the angle
        of the conduction-plane trace (5-point network). "diagonal" is a deprecated alias of "paper"
        (DeprecationWarning).
    rtol : float
        Relative residual of the linear solve.
    gb_tol_deg : float
        Tolerance of the GB classification (types I and II).
    beam_tol_deg : float
        Grains whose c-axis is within this angle of the beam have no conduction-plane trace: their
        GBs get the type "no trace" and are never blocking.
    gb_band_m : float, optional
        Width (m) of the band on each side of a GB over which j_a, j_b and the fields of the
        blockade indicator are averaged (default: a tenth of the equivalent grain diameter,
        :func:`gb_band_px`).
    with_gb_table : bool
        Compute the GB table (skip for speed when not needed).
    solver : {"auto", "direct", "mg", "amg"}
        "direct": SuperLU; "mg": structured multigrid-preconditioned CG
        (:mod:`insitu.analysis.transport.multigrid`); "amg": pyamg-preconditioned CG; "auto": direct up to
        :data:`insitu.analysis.transport.solver.DIRECT_MAX` unknowns, else "mg" (the names of
        :data:`SOLVERS`).
    refine : int or "auto"
        Solve on a ``refine`` x finer grid with sub-voxel grain boundaries
        (:func:`insitu.analysis.transport.refine.refine_microstructure`): the GB table (per GB of
        ``micro``, from the fine grid), the electrode currents and the conductance come from the fine
        solve; ``potential``, ``field`` and ``current_density`` are its block means on the grid of
        ``micro``. "auto": the full model is refined so that the GB bands are at least
        :data:`RESOLVED_BAND_PX` voxels wide, within a cap
        (:func:`insitu.analysis.transport.refine.choose_refine`); the paper model is not refined.
        1 (default): no refinement. ``info["refine"]`` is the factor used, ``info["refine_note"]``
        says why (with "auto").
    refine_sigma_px : float
        Smoothing (coarse voxels) of the sub-voxel boundaries.
    refine_laminate : bool
        Full model, refined: the fine voxels the smooth boundary cuts get the laminate tensor of the
        two grains (:func:`insitu.analysis.transport.refine.apply_laminate`).

    Returns
    -------
    SimulationResult

    Example
    -------
    >>> r = simulate(voronoi_lamella((64, 64)), {"top": 0, "right": 1}, model="paper")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    micro.validate("microstructure")
    if model == "diagonal":
        warnings.warn("model 'diagonal' is deprecated: it is the paper's model, now called 'paper'",
                      DeprecationWarning, stacklevel=2)
    try:
        model = network.model_name(model)
    except ValueError:
        raise UserError(f"unknown model '{model}' (use full or paper)") from None
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
    if refine != 1:
        r, why = refine_factor(micro, model, refine, gb_band_m)
        if r > 1:
            return _refined(micro, pots, model, r, why, refine_sigma_px, refine_laminate, dict(
                rtol=rtol, gb_tol_deg=gb_tol_deg, beam_tol_deg=beam_tol_deg, gb_band_m=gb_band_m,
                with_gb_table=with_gb_table, solver=solver))

    res = _simulate_voxels(micro, pots, model, network.voxel_properties(micro, model), t0, rtol=rtol,
                           gb_tol_deg=gb_tol_deg, beam_tol_deg=beam_tol_deg, gb_band_m=gb_band_m,
                           with_gb_table=with_gb_table, solver=solver)
    if refine != 1:
        res.info["refine_note"] = why            # "auto" chose not to refine, and why
    return res


def _simulate_voxels(micro, pots, model, v, t0, *, rtol, gb_tol_deg, beam_tol_deg, gb_band_m, with_gb_table,
                     solver) -> SimulationResult:
    """:func:`simulate` on the grid of ``micro`` (no refinement) from its voxel properties ``v``
    (:func:`network.voxel_properties`, possibly altered: the laminate of a refined map); ``pots``
    checked, ``t0`` when the call began (for ``info["t_setup_s"]``)."""
    el = v.electrode >= 0
    alive = v.conducting | el
    floating_mask = alive & ~network.connected_to(alive, el)
    floating = []
    if floating_mask.any():
        floating = _floating_clusters(micro.grains, floating_mask)
        warnings.warn(floating_message(floating) + " (excluded: potential NaN, no current)", stacklevel=2)
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
    if method not in SOLVERS:
        raise UserError(f"unknown solver '{solver}' (use auto, {', '.join(SOLVERS)})")
    info = {}
    stencil = network.assemble(v, micro)
    t2 = time.perf_counter()
    xgrid = SOLVERS[method](LinearProblem(micro, stencil, v, fixed, model, rtol), info)
    nnz = info.pop("nnz")
    t3 = time.perf_counter()

    phi, phi0 = network.potential_maps(xgrid, v.conducting, el, fixed)   # phi0: 0 where nothing conducts
    currents = network.electrode_currents(stencil, phi0, v.electrode, v.names)
    j = np.empty(micro.shape + (2,))                 # (jx, jy) written here, then masked in place
    fl = network.fluxes(v, micro, phi0, stencil=stencil, out=j)
    j, E = network.current_and_field(v, fl, out=j, phi=phi0, h=micro.voxel_size_m)
    conductance = None
    if len(pots) == 2:
        (na, va), (nb, vb) = pots.items()
        if va != vb:
            conductance = abs(currents[na]) / abs(va - vb)
    t4 = time.perf_counter()
    if with_gb_table:
        applied = applied_field(micro, pots, solver=solver, rtol=rtol)
        band_px = gb_band_px(v.label) if gb_band_m is None else gb_band_m / micro.voxel_size_m
        info["gb_band_m"] = float(band_px * micro.voxel_size_m)
        table = gb_table(micro, v, phi, j, E, applied, fl, gb_tol_deg, beam_tol_deg, band_px)
    else:
        table = _empty_table()
    t5 = time.perf_counter()
    info.update(refine=1)
    info.update(gb_tol_deg=float(gb_tol_deg), beam_tol_deg=float(beam_tol_deg), t_setup_s=t1 - t0, t_assemble_s=t2 - t1, t_solve_s=t3 - t2, t_post_s=t4 - t3, t_gb_s=t5 - t4,
                unknowns=n_unknown, nnz=nnz)
    return SimulationResult(potential=phi, field=E, current_density=j, electrode_current=currents, gb_table=table,
                            conductance_S=conductance, potentials=pots, model=model,
                            voxel_size_m=float(micro.voxel_size_m), floating=floating, info=info)


def refine_factor(micro: Microstructure, model: str, refine, gb_band_m: float | None = None) -> tuple[int, str]:
    """The refinement factor for ``simulate(..., refine=refine)`` and one line saying why.

    An integer is used as given; "auto" refines the full model so that its GB bands are at least
    :data:`RESOLVED_BAND_PX` voxels wide (:func:`insitu.analysis.transport.refine.choose_refine`,
    with its cap on the fine grid) and leaves the paper model alone (its GB quantities are within
    ~5 % at bands of 5 voxels).

    Example
    -------
    >>> from insitu.analysis.transport.lamella import voronoi_lamella
    >>> refine_factor(voronoi_lamella((256, 256)), "full", "auto")[0]     # bands 5.4 voxels
    4
    """
    from insitu.analysis.transport.refine import choose_refine

    if isinstance(refine, str):
        if refine != "auto":
            raise UserError(f"refine '{refine}': use a whole number >= 1 or auto")
        band_px = gb_band_px(micro.grains) if gb_band_m is None else gb_band_m / micro.voxel_size_m
        if model != "full":
            return 1, f"model {model}: GB quantities converge at bands of ~5 voxels; not refined"
        return choose_refine(band_px, micro.shape, RESOLVED_BAND_PX)
    if isinstance(refine, bool) or not float(refine).is_integer() or int(refine) < 1:
        raise UserError(f"refine {refine}: use a whole number >= 1 or auto")
    return int(refine), f"refined {int(refine)}x as asked"


def _grain_pairs(grains) -> set:
    """Pairs (a, b), a < b, of grains (> 0) that share a voxel face."""
    g = np.asarray(grains)
    out = set()
    for u, w in ((g[:, :-1], g[:, 1:]), (g[:-1], g[1:])):
        sel = (u > 0) & (w > 0) & (u != w)
        ab = np.stack([np.minimum(u[sel], w[sel]), np.maximum(u[sel], w[sel])], 1)
        out.update(map(tuple, np.unique(ab, axis=0).tolist()))
    return out


def _refined(micro, pots, model, r, why, sigma_px, lam, kw) -> SimulationResult:
    """:func:`simulate` on the ``r`` x refined map, reported on the grid of ``micro``."""
    from insitu.analysis.transport.refine import apply_laminate, block_mean, refine_fields, refine_microstructure

    lam = bool(lam) and model == "full"
    fields = refine_fields(micro.grains, r, sigma_px, cut=lam)
    fine = refine_microstructure(micro, r, labels=fields["labels"])
    t0 = time.perf_counter()
    fine.validate("refined microstructure")
    v = network.voxel_properties(fine, model)
    n_cut = apply_laminate(v, fields, fine) if lam else 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _simulate_voxels(fine, pots, model, v, t0, **kw)
    for w in caught:              # the floating-cluster warning is said again below, in coarse voxels
        if not (res.floating and str(w.message).startswith(f"{len(res.floating)} conducting cluster")):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    floating = [dict(size=int(np.ceil(c["size"] / r ** 2)), grains=c["grains"], y=c["y"] // r, x=c["x"] // r)
                for c in res.floating]
    if floating:
        warnings.warn(floating_message(floating) + " (excluded: potential NaN, no current)", stacklevel=3)
    table = res.gb_table
    pairs, fine_pairs = _grain_pairs(micro.grains), _grain_pairs(fine.grains)
    if len(table["grain_a"]):
        keep = np.array([(int(a), int(b)) in pairs for a, b in zip(table["grain_a"], table["grain_b"])])
        table = {k: v[keep] for k, v in table.items()}
    info = dict(res.info, refine=int(r), refine_note=why, refine_sigma_px=float(sigma_px),
                refine_gbs_lost=len(pairs - fine_pairs), refine_gbs_left_out=len(fine_pairs - pairs),
                fine_shape=list(fine.shape), refine_laminate_voxels=int(n_cut))
    return replace(res, potential=block_mean(res.potential, r), field=block_mean(res.field, r),
                   current_density=block_mean(res.current_density, r), gb_table=table,
                   voxel_size_m=float(micro.voxel_size_m), floating=floating, info=info)


def _empty_table():
    t = {k: np.zeros(0) for k in GB_COLUMNS}
    t["grain_a"] = np.zeros(0, np.int32)
    t["grain_b"] = np.zeros(0, np.int32)
    t["gb_type"] = np.zeros(0, dtype="<U8")
    t["blocking"] = np.zeros(0, bool)
    return t


def floating_message(floating: list) -> str:
    """One line describing the excluded floating clusters (:attr:`SimulationResult.floating`)."""
    desc = "; ".join(f"{c['size']} voxel(s) with grains {c['grains']} at row {c['y']}, column {c['x']}"
                     for c in floating[:5])
    more = f"; and {len(floating) - 5} more" if len(floating) > 5 else ""
    return f"{len(floating)} conducting cluster(s) touch no electrode: {desc}{more}"


def applied_field(micro: Microstructure, potentials: dict, solver: str = "auto", rtol: float = 1e-8,
                  factor: int | None = None) -> np.ndarray:
    """The applied field (V/m, (ny, nx, 2)): the field of the same electrodes in a uniform isotropic
    lamella (every non-vacuum voxel, ZrO2 and backbone included, conducts sigma_ip; no GBs).

    This is the field the paper classifies GBs against (DOMAIN.md, "GB classification"). It is
    solved on a grid ``factor`` times coarser (default :func:`coarse.applied_factor`: 1 below
    1024 voxels across, up to 8, keeping >= 512 voxels across) and read back at the fine voxels
    (:mod:`insitu.analysis.transport.coarse`); if the coarse lamella is not valid or leaves a
    conducting voxel floating, on the fine grid.

    Example
    -------
    >>> E = applied_field(voronoi_lamella((64, 64)), {"top": 0.0, "right": 1.0})   # doctest: +SKIP
    """
    from insitu.analysis.transport import coarse

    f = coarse.applied_factor(micro.shape) if factor is None else int(factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if f > 1:
            try:
                r = simulate(coarse.coarse_uniform(micro, f), potentials, model="paper", rtol=rtol,
                             with_gb_table=False, solver=solver)
                if not r.floating:
                    return coarse.upsample_field(r.field, micro, f)
            except UserError:
                pass
        r = simulate(coarse.coarse_uniform(micro, 1), potentials, model="paper", rtol=rtol, with_gb_table=False,
                     solver=solver)
    return r.field


def gb_band_px(label, fraction: float = 0.1) -> float:
    """Default width (voxels) of the bands beside each GB over which j_a, j_b and the fields are
    averaged: ``fraction`` of the equivalent diameter sqrt(mean grain area), at least one voxel.
    A fixed fraction of the grain size is the same physical width at every resolution, so the GB
    quantities converge under refinement (a one-voxel band does not: the thin-film tensor makes
    boundary layers about d / sqrt(anisotropy) wide at every GB).

    Example
    -------
    >>> gb_band_px(np.repeat(np.arange(1, 5), 25).reshape(10, 10))   # 4 grains of 25 voxels
    1.0
    """
    lab = np.asarray(label)
    n = np.unique(lab[lab > 0]).size
    if n == 0:
        return 1.0
    return max(1.0, fraction * float(np.sqrt(np.count_nonzero(lab > 0) / n)))


#: band width (voxels) from which the thin-film model's GB jumps were measured within 10 % of a
#: 2x finer solve (tests/test_gb_convergence.py: bands of 21.6 voxels 3.1 % median, 5.3 % max; 10.8
#: voxels 7.5 %, 18 %; 5.4 voxels 22 %, 34 %; docs/simulator.md, "Resolution")
RESOLVED_BAND_PX = 20.0


def gb_resolution_note(result) -> str | None:
    """One line saying that the GB quantities of a full-model result are under-resolved (its GB
    bands narrower than :data:`RESOLVED_BAND_PX` voxels), else None.

    Example
    -------
    >>> r = SimulationResult(np.zeros((1, 1)), np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), {}, {}, None, {},
    ...                      "full", 1e-8, info={"gb_band_m": 5.4e-8})
    >>> print(gb_resolution_note(r)[:56])
    note: GB bands are 5.4 voxels wide; the thin-film model'
    """
    band_m = result.info.get("gb_band_m")
    if result.model != "full" or band_m is None:
        return None
    r = int(result.info.get("refine", 1))
    band_px = float(band_m) / result.voxel_size_m * r          # in voxels of the grid solved
    if band_px >= RESOLVED_BAND_PX:
        return None
    hint = "" if r > 1 else "; --refine auto (simulate(..., refine='auto')) solves on a finer grid with sub-voxel GBs"
    return (f"note: GB bands are {band_px:.1f} voxels wide; the thin-film model's GB jumps come within 10 % of a "
            f"2x finer solve only from bands of ~{RESOLVED_BAND_PX:.0f} voxels (grains ~{10 * RESOLVED_BAND_PX:.0f} "
            f"voxels across); narrower bands give them too small, their ranking stable (docs/simulator.md, "
            f"Resolution){hint}")


def gb_bands(label, faces, pair, band_px: float):
    """The voxels within ``band_px`` (Euclidean, voxel centres) of a GB, on either side of it.

    Each grain voxel is given to the GB of its nearest boundary voxel when that voxel is in the
    same grain (a voxel of grain a nearest to the a-side of GB a|b lies in a's band of that GB).

    Parameters
    ----------
    label : ndarray of int (ny, nx)
        Grain ids (> 0) where GBs count, else 0.
    faces : dict
        :func:`insitu.analysis.transport.microstructure.boundary_pixels` of ``label``.
    pair : ndarray of int
        GB index of every face.
    band_px : float
        Band width in voxels (0: the boundary voxels only).

    Returns
    -------
    lin : ndarray of int
        Flat indices of the band voxels.
    gb : ndarray of int
        Their GB index.
    on_a : ndarray of bool
        True on the grain_a side.
    """
    from scipy import ndimage

    ny, nx = label.shape
    pmap = np.full(label.shape, -1, np.int64)
    pmap[faces["ya"], faces["xa"]] = pair
    pmap[faces["yb"], faces["xb"]] = pair
    side_a = np.zeros(label.shape, bool)
    side_a[faces["ya"], faces["xa"]] = True
    side_a[faces["yb"], faces["xb"]] = False            # a voxel on both sides of two GBs: taken as b
    if band_px <= 0:
        sel = pmap >= 0
        lin = np.flatnonzero(sel)
        return lin, pmap.ravel()[lin], side_a.ravel()[lin]
    d, (iy, ix) = ndimage.distance_transform_edt(pmap < 0, return_indices=True)
    sel = (label > 0) & (d <= band_px)
    sel &= label[iy, ix] == label
    lin = np.flatnonzero(sel)
    near = iy.ravel()[lin] * nx + ix.ravel()[lin]
    return lin, pmap.ravel()[near], side_a.ravel()[near]


def gb_table(micro, v, phi, j, E, applied, fl, tol_deg=15.0, beam_tol_deg=15.0, band_px=None) -> dict:
    """Per pair of touching grains: geometry, mean |j| on each side, jump, blockade indicator, type.

    Parameters
    ----------
    micro : Microstructure
    v : network.Voxels
    phi : ndarray (ny, nx)
        Potential (V).
    j, E, applied : ndarray (ny, nx, 2)
        Current density (A/m^2), field and applied field (:func:`applied_field`, V/m).
    fl : dict
        Face fluxes (:func:`insitu.analysis.transport.network.fluxes`).
    tol_deg, beam_tol_deg : float
        Classification tolerances (:func:`insitu.analysis.transport.gb.classify`, :func:`insitu.analysis.transport.gb.trace_angle_deg`).
    band_px : float, optional
        Width (voxels) of the band on each side over which |j| and E are averaged
        (default :func:`gb_band_px`).

    Returns
    -------
    dict of ndarray
        The :data:`GB_COLUMNS` (docs/simulator.md, "Outputs").
    """
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
    length, normal_deg = gbmod.boundary_geometry(bp, inv, npair)
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
    jflat, eflat = j.reshape(-1, 2), E.reshape(-1, 2)      # views: read near the GBs only
    band_px = gb_band_px(v.label) if band_px is None else float(band_px)
    lin, p, on_a = gb_bands(v.label, bp, inv, band_px)

    def side_means(sel):
        """Per pair: mean |j| and mean E over the band voxels of one side (NaN if there are none)."""
        pp, jj, ee = p[sel], jflat[lin[sel]], np.nan_to_num(eflat[lin[sel]])
        cnt = np.bincount(pp, minlength=npair).astype(float)
        cnt[cnt == 0] = np.nan
        mean = lambda w: np.bincount(pp, w, minlength=npair) / cnt
        return mean(np.hypot(jj[:, 0], jj[:, 1])), np.stack([mean(ee[:, 0]), mean(ee[:, 1])], 1)

    j_a, e_a = side_means(on_a)
    j_b, e_b = side_means(~on_a)
    lost = np.isnan(j_a) | np.isnan(j_b)      # short GBs whose boundary voxels all serve another GB
    if lost.any():
        for ys, xs, jj, ee in ((bp["ya"], bp["xa"], j_a, e_a), (bp["yb"], bp["xb"], j_b, e_b)):
            k = np.unique(inv.astype(np.int64) * (ny * nx) + ys.astype(np.int64) * nx + xs)
            pp, ll = k // (ny * nx), k % (ny * nx)
            cnt = np.bincount(pp, minlength=npair)
            mean = lambda w: np.bincount(pp, w, minlength=npair) / np.maximum(cnt, 1)
            jv, ev = jflat[ll], np.nan_to_num(eflat[ll])
            jj[lost] = mean(np.hypot(jv[:, 0], jv[:, 1]))[lost]
            ee[lost] = np.stack([mean(ev[:, 0]), mean(ev[:, 1])], 1)[lost]
    local = (e_a + e_b) / 2.0
    # applied field at the GB: mean over its faces of the two voxels' applied field
    app = applied.reshape(-1, 2)
    la, lb = bp["ya"].astype(np.int64) * nx + bp["xa"], bp["yb"].astype(np.int64) * nx + bp["xb"]
    face_app = np.nan_to_num((app[la] + app[lb]) / 2.0)
    ea = np.stack([np.bincount(inv, face_app[:, 0], minlength=npair),
                   np.bincount(inv, face_app[:, 1], minlength=npair)], 1) / nfaces[:, None]
    e_abs = np.hypot(ea[:, 0], ea[:, 1])
    n = np.stack([np.cos(np.radians(normal_deg)), np.sin(np.radians(normal_deg))], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # field divergence at the GB, in units of the applied field: > 0 where the field points away
        # from the GB on both sides (ions pile up), < 0 where ions are drained
        blockade = np.where(e_abs > 0, ((e_b - e_a) * n).sum(1) / e_abs, np.nan)
    upstream_a = np.sign((ea * n).sum(1))            # +1: the applied field carries ions from a to b
    cmap = micro.c_axis_map()
    ca = np.array([cmap[int(g)] for g in ga])
    cb = np.array([cmap[int(g)] for g in gbb])
    theta_a, theta_b = gbmod.trace_angle_deg(ca, beam_tol_deg), gbmod.trace_angle_deg(cb, beam_tol_deg)
    applied_deg = np.degrees(np.arctan2(ea[:, 1], ea[:, 0]))
    gb_type, blocking = gbmod.classify(theta_a, theta_b, normal_deg, applied_deg, tol_deg)
    mis = np.full(npair, np.nan)
    if micro.euler_bunge is not None:
        from insitu.analysis.transport.orientation import misorientation_deg

        emap = {int(g): micro.euler_bunge[i] for i, g in enumerate(micro.grain_ids)}
        mis = misorientation_deg(np.array([emap[int(g)] for g in ga]), np.array([emap[int(g)] for g in gbb]))
    return {"grain_a": ga, "grain_b": gbb, "length_m": length * float(micro.voxel_size_m), "j_a": j_a, "j_b": j_b,
            "jump": j_a - j_b, "delta_phi": delta_phi, "gb_type": np.asarray(gb_type),
            "misorientation_deg": mis, "plane_angle_deg": gbmod.plane_angle_deg(ca, cb), "blocking": blocking,
            "jump_flow": upstream_a * (j_a - j_b), "blockade": blockade, "applied_field_deg": applied_deg,
            "local_field_deg": np.degrees(np.arctan2(local[:, 1], local[:, 0])), "normal_deg": normal_deg,
            "theta_a_deg": theta_a, "theta_b_deg": theta_b}


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
