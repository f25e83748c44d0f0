"""Refined solves: a voxel map upsampled r x r with sub-voxel grain boundaries (docs/simulator.md,
"Resolution").

A voxelised GB is a staircase; solving the staircase on a finer grid only resolves the staircase.
:func:`refine_labels` reconstructs a smooth boundary instead: every grain's indicator function is
smoothed by a Gaussian of ``sigma_px`` coarse voxels, interpolated (bilinear) to the centres of the
fine voxels, and each fine voxel of a grain voxel goes to the grain whose smoothed indicator is
largest there. Straight boundaries along the grid axes stay exactly where they were (the
smoothed indicators of the two sides cross on the face), a staircase along an oblique line
becomes that line (its steps, of period <= 2-3 voxels for angles far from the axes, are damped by
~exp(-2 pi^2 sigma^2 / period^2)); triple junctions are rounded over ~sigma. Vacuum, ZrO2,
backbone and the electrodes are not grains: they are upsampled as blocks (each coarse voxel
becomes r x r fine voxels of its class), so only grain-grain boundaries move.

>>> g = np.array([[1, 1, 2], [1, 2, 2], [2, 2, 2]])
>>> refine_labels(g, 2).shape
(6, 6)
"""
from __future__ import annotations

import numpy as np

#: largest fine grid (voxels) that ``refine="auto"`` builds: 2048^2 (a 2048^2 thin-film solve takes
#: ~25-60 s and ~2.4 GB on the 2-core test machine)
AUTO_MAX_VOXELS = 2048 * 2048
#: largest refinement factor ``refine="auto"`` chooses
AUTO_MAX_FACTOR = 8


def block_upsample(a: np.ndarray, r: int) -> np.ndarray:
    """Each element of the first two axes of ``a`` repeated ``r`` x ``r`` times.

    >>> block_upsample(np.array([[1, 2]]), 2)
    array([[1, 1, 2, 2],
           [1, 1, 2, 2]])
    """
    return np.repeat(np.repeat(a, r, axis=0), r, axis=1)


def block_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over each r x r block of the first two axes of ``a``, NaN ignored (NaN where the whole
    block is NaN); trailing axes are kept.

    >>> block_mean(np.array([[1.0, 3.0], [np.nan, 2.0]]), 2)
    array([[2.]])
    """
    ny, nx = a.shape[0] // r, a.shape[1] // r
    b = a.reshape((ny, r, nx, r) + a.shape[2:])
    finite = np.isfinite(b)
    cnt = finite.sum(axis=(1, 3))
    s = np.where(finite, b, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)


def _interp_weights(n_coarse: int, r: int):
    """Bilinear interpolation from coarse voxel centres to the centres of ``r`` x finer voxels:
    lower index, upper index and weight of the upper one, per fine index (clamped at the ends)."""
    u = (np.arange(n_coarse * r) + 0.5) / r - 0.5
    u = np.clip(u, 0.0, n_coarse - 1.0)
    i0 = np.minimum(np.floor(u).astype(np.intp), max(n_coarse - 2, 0))
    i1 = np.minimum(i0 + 1, n_coarse - 1)
    return i0, i1, u - i0


def refine_labels(grains: np.ndarray, r: int, sigma_px: float = 1.0) -> np.ndarray:
    """Grain map upsampled ``r`` x with sub-voxel grain boundaries.

    Parameters
    ----------
    grains : ndarray of int (ny, nx)
        > 0 grain ids; <= 0 other classes (vacuum, ZrO2, backbone), which are block-upsampled.
    r : int
        Refinement factor (>= 1; 1 returns a copy).
    sigma_px : float
        Width (coarse voxels) of the Gaussian that smooths each grain's indicator.

    Returns
    -------
    ndarray of int32 (r ny, r nx)
        Each fine voxel of a coarse grain voxel carries the grain with the largest smoothed indicator
        at its centre; every grain of ``grains`` is kept (one that would vanish, a single voxel say,
        is restored as its blocks).

    Example
    -------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> g = np.where(xx + 0.5 < 0.5 * (yy + 0.5) + 20, 1, 2)            # staircase of a straight line
    >>> f = refine_labels(g, 4)
    >>> Y, X = np.mgrid[:256, :256] / 4.0 + 0.125                         # fine centres, coarse units
    >>> wrong = (f == 1) != (X < 0.5 * Y + 20)
    >>> bool(wrong[16:-16, 16:-16].mean() < 0.01)                         # near the line only
    True
    """
    return refine_fields(grains, r, sigma_px)["labels"]


def refine_fields(grains, r: int, sigma_px: float = 1.0, cut: bool = False) -> dict:
    """:func:`refine_labels` as ``{"labels": ...}``; with ``cut``, also per fine voxel: ``best`` and
    ``second``, the largest and second-largest smoothed grain indicators, ``second_id`` the
    runner-up grain, ``grad`` (x, y) the gradient (per coarse voxel) of the best grain's indicator."""
    from scipy import ndimage

    g = np.asarray(grains)
    r = int(r)
    if r < 1:
        raise ValueError(f"refinement factor {r}: must be >= 1")
    fine = block_upsample(g.astype(np.int32), r)
    if r == 1:
        return {"labels": fine}
    ny, nx = g.shape
    ids, comp = np.unique(np.where(g > 0, g, 0), return_inverse=True)
    comp = comp.reshape(g.shape).astype(np.int32)       # 1..n for grains (0: not a grain)
    if ids[0] != 0:
        comp += 1
        ids = np.concatenate([[0], ids])
    is_grain = block_upsample(g > 0, r)
    best = np.full(fine.shape, -np.inf, np.float32)
    if cut:       # runner-up grain and its value, gradient (per coarse voxel) of the best grain's indicator
        second = np.full(fine.shape, -np.inf, np.float32)
        second_id = np.zeros(fine.shape, np.int32)
        grad = np.zeros(fine.shape + (2,), np.float32)
    wy, wx = _interp_weights(ny, r), _interp_weights(nx, r)
    m = int(np.ceil(4 * sigma_px)) + 1
    for k, box in enumerate(ndimage.find_objects(comp), start=1):
        if box is None:
            continue
        y0, y1 = max(0, box[0].start - m), min(ny, box[0].stop + m)
        x0, x1 = max(0, box[1].start - m), min(nx, box[1].stop + m)
        ey0, ey1, ex0, ex1 = max(0, y0 - 1), min(ny, y1 + 1), max(0, x0 - 1), min(nx, x1 + 1)   # + interpolation
        s = ndimage.gaussian_filter((comp[ey0:ey1, ex0:ex1] == k).astype(np.float32), sigma_px, mode="nearest")
        # bilinear values at the fine centres of the box (the global weights, shifted into the box)
        fy = slice(y0 * r, y1 * r)
        fx = slice(x0 * r, x1 * r)
        iy0, iy1, ty = (w[fy] for w in wy)
        ix0, ix1, tx = (w[fx] for w in wx)

        def at_fine(a):
            rows = a[iy0 - ey0] * (1 - ty)[:, None] + a[iy1 - ey0] * ty[:, None]
            return rows[:, ix0 - ex0] * (1 - tx) + rows[:, ix1 - ex0] * tx

        val = at_fine(s)
        sel = is_grain[fy, fx] & (val > best[fy, fx])
        if cut:
            sel2 = is_grain[fy, fx] & ~sel & (val > second[fy, fx])
            second[fy, fx][sel2] = val[sel2]
            second_id[fy, fx][sel2] = ids[k]
            second[fy, fx][sel] = best[fy, fx][sel]
            second_id[fy, fx][sel] = fine[fy, fx][sel]
            gy, gx = np.gradient(s)
            for c, gc in enumerate((gx, gy)):
                grad[fy, fx, c][sel] = at_fine(gc)[sel]
        best[fy, fx][sel] = val[sel]
        fine[fy, fx][sel] = ids[k]
    present = np.unique(fine[fine > 0])
    lost = np.setdiff1d(ids[1:], present)
    if lost.size:
        coarse = block_upsample(g, r)
        back = np.isin(coarse, lost)
        fine[back] = coarse[back]
        if cut:
            second[back] = -np.inf
    out = {"labels": fine}
    if cut:
        out.update(best=best, second=second, second_id=second_id, grad=grad)
    return out


def refine_microstructure(micro, r: int, sigma_px: float = 1.0, labels=None):
    """``micro`` on an ``r`` x finer grid: grains by :func:`refine_labels` (or ``labels``, already
    refined), electrodes as blocks, voxel size / r, everything else the same.

    Example
    -------
    >>> from insitu.analysis.transport.lamella import voronoi_lamella
    >>> m = voronoi_lamella((32, 32), n_grains=4)
    >>> refine_microstructure(m, 2).shape
    (64, 64)
    """
    from dataclasses import replace

    if int(r) == 1:
        return micro
    return replace(micro, grains=refine_labels(micro.grains, r, sigma_px) if labels is None else labels,
                   electrodes={k: block_upsample(v, r) for k, v in micro.electrodes.items()},
                   voxel_size_m=micro.voxel_size_m / r)


def choose_refine(band_px: float, shape, target_band_px: float, max_voxels: int = AUTO_MAX_VOXELS,
                  max_factor: int = AUTO_MAX_FACTOR) -> tuple[int, str]:
    """The refinement factor of ``refine="auto"`` and one line saying why.

    The smallest r with ``r * band_px >= target_band_px``, unless the fine grid would exceed
    ``max_voxels`` or r would exceed ``max_factor``: then the largest r within both caps (1 when even
    2 exceeds them).

    >>> choose_refine(5.4, (256, 256), 20.0)[0]
    4
    >>> choose_refine(12.0, (2048, 2048), 20.0)[0]
    1
    """
    n = int(np.prod(shape))
    want = max(1, int(np.ceil(target_band_px / max(band_px, 1e-12) - 1e-9)))
    cap = max(1, min(int(max_factor), int(np.floor(np.sqrt(max_voxels / max(n, 1))))))
    r = min(want, cap)
    if want == 1:
        why = f"GB bands {band_px:.1f} voxels wide (>= {target_band_px:.0f}): no refinement needed"
    elif r == want:
        why = (f"GB bands {band_px:.1f} voxels wide: solved on a {r}x finer grid "
               f"({shape[0] * r} x {shape[1] * r}, bands {band_px * r:.1f} voxels)")
    else:
        why = (f"GB bands {band_px:.1f} voxels wide would need a {want}x finer grid; the cap "
               f"({max_voxels} voxels, factor <= {max_factor}) allows {r}x"
               + ("" if r > 1 else ": not refined") + f" (GB jumps less converged, docs/simulator.md, Resolution)")
    return r, why


def laminate(sa: np.ndarray, sb: np.ndarray, phi: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Effective 2x2 conductivity of a rank-1 laminate: a fraction ``phi`` of ``sa`` and ``1 - phi``
    of ``sb`` in layers with unit normal ``normal`` (continuity of the normal current and of the
    tangential field: harmonic mean across the layers, arithmetic along them).

    Parameters
    ----------
    sa, sb : ndarray (k, 3)
        (sxx, syy, sxy) of the two materials (S/m).
    phi : ndarray (k,)
        Volume fraction of ``sa``.
    normal : ndarray (k, 2)
        Unit layer normal (x, y).

    Returns
    -------
    ndarray (k, 3)
        (sxx, syy, sxy) (S/m).

    Example
    -------
    >>> s = laminate(np.array([[1.0, 1.0, 0.0]]), np.array([[3.0, 3.0, 0.0]]), np.array([0.5]),
    ...              np.array([[1.0, 0.0]]))
    >>> s.round(6).tolist()                   # series across x: 1.5; parallel along y: 2
    [[1.5, 2.0, 0.0]]
    """
    nx, ny = normal[:, 0], normal[:, 1]

    def frame(s):
        sxx, syy, sxy = s[:, 0], s[:, 1], s[:, 2]
        return (nx * nx * sxx + 2 * nx * ny * sxy + ny * ny * syy,            # n.S.n
                -nx * ny * sxx + (nx * nx - ny * ny) * sxy + nx * ny * syy,   # n.S.t, t = (-ny, nx)
                ny * ny * sxx - 2 * nx * ny * sxy + nx * nx * syy)            # t.S.t

    (aa, ba, ca), (ab, bb, cb) = frame(sa), frame(sb)
    q = 1.0 - phi
    a = 1.0 / (phi / aa + q / ab)
    b = a * (phi * ba / aa + q * bb / ab)
    c = phi * (ca - ba ** 2 / aa) + q * (cb - bb ** 2 / ab) + b ** 2 / a
    return np.stack([a * nx * nx - 2 * b * nx * ny + c * ny * ny,
                     a * ny * ny + 2 * b * nx * ny + c * nx * nx,
                     a * nx * ny + b * (nx * nx - ny * ny) - c * nx * ny], axis=1)


def cut_fractions(fields: dict):
    """Fine voxels cut by the smooth boundary: flat indices, own-grain volume fraction, unit normal
    and the other grain, from :func:`refine_fields` (``cut=True``) output.

    Along each axis where the 4-neighbour is another grain, the boundary crosses the segment
    between the two centres where the smoothed indicators of the two grains are equal (linear
    interpolation of best - second on either side): ``d`` (fine voxels) from the centre. The
    distance to the boundary line is then ``d |n_axis|`` (n: the normal from the indicator's
    gradient; the smaller over the axes), and the fraction that of a voxel cut by that line,
    ``0.5 + s / (|n_x| + |n_y|)`` (linear in s; exact for lines along the axes). A voxel more
    than 99.9 % inside is left alone, so boundaries on the grid stay exact; an axis along which the
    normal's component is below 0.2 is not used (a junction, not this boundary).
    """
    lab, g = fields["labels"], (fields["best"] - fields["second"]).astype(np.float64)
    grad = fields["grad"].astype(np.float64)
    norm = np.hypot(grad[..., 0], grad[..., 1])
    s = np.full(lab.shape, np.inf)
    other = np.zeros(lab.shape, np.int32)
    nrm = np.where(norm[..., None] > 0, grad / np.where(norm > 0, norm, 1.0)[..., None], 0.0)
    for axis in (0, 1):
        for step in (1, -1):
            nb = np.roll(lab, -step, axis=axis)
            gn = np.roll(g, -step, axis=axis)
            edge = np.zeros(lab.shape, bool)
            if step == 1:
                (edge[:-1] if axis == 0 else edge[:, :-1])[...] = True
            else:
                (edge[1:] if axis == 0 else edge[:, 1:])[...] = True
            comp = np.abs(nrm[..., 1 - axis])          # grad is (x, y): the normal's component along this axis
            # a neighbour of another grain across an axis the boundary nearly runs along: a junction, skipped
            sel = edge & (lab > 0) & (nb > 0) & (nb != lab) & np.isfinite(g) & np.isfinite(gn) & (comp >= 0.2)
            with np.errstate(invalid="ignore", divide="ignore"):
                dist = np.where(sel, g / (g + gn) * comp, np.inf)
            better = sel & np.isfinite(dist) & (dist < s)
            s[better] = dist[better]
            other[better] = nb[better]
    w = np.abs(nrm[..., 0]) + np.abs(nrm[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.clip(0.5 + s / np.where(w > 0, w, 1.0), 0.0, 1.0)
    cut = np.isfinite(s) & (phi < 0.999) & (w > 0)
    lin = np.flatnonzero(cut)
    return lin, phi.ravel()[lin], nrm.reshape(-1, 2)[lin], other.ravel()[lin]


def apply_laminate(v, fields: dict, micro) -> int:
    """Give the fine voxels cut by the smooth boundary (:func:`cut_fractions`) the laminate tensor
    (:func:`laminate`) of their grain and the grain across, in place in ``v``
    (:class:`insitu.analysis.transport.network.Voxels` of the thin-film model on the fine map
    ``micro``); returns the number of voxels changed. The GB resistor stays on the fine faces."""
    from insitu.analysis.transport.network import grain_conductivity

    lin, phi, n, other = cut_fractions(fields)
    keep = v.conducting.ravel()[lin] & (v.label.ravel()[lin] > 0)
    lin, phi, n, other = lin[keep], phi[keep], n[keep], other[keep]
    if lin.size == 0:
        return 0
    table = grain_conductivity(micro.c_axis, micro.sigma_ip, micro.anisotropy, "full")
    row = {int(g): i for i, g in enumerate(micro.grain_ids)}
    sb = table[np.array([row[int(o)] for o in other])]
    sa = np.stack([v.sxx.ravel()[lin], v.syy.ravel()[lin], v.sxy.ravel()[lin]], 1)
    eff = laminate(sa, sb, phi, n)
    det = eff[:, 0] * eff[:, 1] - eff[:, 2] ** 2
    for arr, val in ((v.sxx, eff[:, 0]), (v.syy, eff[:, 1]), (v.sxy, eff[:, 2]), (v.rxx, eff[:, 1] / det),
                     (v.ryy, eff[:, 0] / det), (v.rxy, -eff[:, 2] / det)):
        arr.ravel()[lin] = val            # contiguous arrays: ravel() is a view
    return int(lin.size)
