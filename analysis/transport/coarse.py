"""A uniform lamella on a coarser grid, for the applied field (docs/simulator.md, "GB classification").

The applied field only gives the field's direction at each GB (averaged over its faces), and in a
uniform isotropic lamella it is smooth: it can be solved on a grid ``factor`` times coarser and
read back at the fine voxels. :func:`applied_factor` picks the factor, :func:`coarse_uniform` builds
the coarse lamella and :func:`upsample_field` maps its field back.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from insitu.analysis.transport.microstructure import VACUUM, Microstructure
from insitu.analysis.transport.refine import block_upsample

#: the coarse grid keeps at least this many voxels across its shorter side
APPLIED_MIN_SIDE = 512
#: the largest coarsening factor used for the applied field
APPLIED_MAX_FACTOR = 8


def applied_factor(shape, min_side: int = APPLIED_MIN_SIDE, max_factor: int = APPLIED_MAX_FACTOR) -> int:
    """Coarsening factor (1, 2, 4, ...) for a grid of ``shape`` (ny, nx): the largest power of two, at
    most ``max_factor``, that leaves at least ``min_side`` voxels across the shorter side.

    Example
    -------
    >>> applied_factor((4096, 4096)), applied_factor((2048, 1500)), applied_factor((1024, 1024)), applied_factor((512, 512))
    (8, 2, 2, 1)
    """
    f = 1
    while 2 * f <= max_factor and min(shape) // (2 * f) >= min_side:
        f *= 2
    return f


def _blocks(a, f, fill):
    """a (ny, nx) padded with ``fill`` to multiples of f, viewed as (ny/f, f, nx/f, f) blocks."""
    ny, nx = a.shape
    cy, cx = -(-ny // f), -(-nx // f)
    a = np.pad(a, ((0, cy * f - ny), (0, cx * f - nx)), constant_values=fill)
    return a.reshape(cy, f, cx, f)


def coarse_uniform(micro: Microstructure, factor: int) -> Microstructure:
    """The uniform isotropic lamella of ``micro`` (every non-vacuum voxel one grain with c along the
    beam) on a grid ``factor`` times coarser (voxel edge factor * h, m).

    A coarse voxel is solid where any of its fine voxels is (so the lamella stays connected), and
    belongs to the electrode with the most fine voxels in it, where any electrode has one (so thin
    electrode strips survive); electrodes win over solid.

    Example
    -------
    >>> from insitu.analysis.transport.lamella import voronoi_lamella
    >>> coarse_uniform(voronoi_lamella((64, 64), n_grains=5), 2).shape
    (32, 32)
    """
    f = int(factor)
    solid = _blocks(micro.grains != VACUUM, f, False).any(axis=(1, 3))
    names = list(micro.electrodes)
    counts = np.stack([_blocks(micro.electrodes[k], f, False).sum(axis=(1, 3)) for k in names])
    owner = np.argmax(counts, axis=0)
    has = counts.max(axis=0) > 0
    electrodes = {k: has & (owner == i) for i, k in enumerate(names)}
    return replace(micro, grains=solid.astype(np.int32), grain_ids=np.array([1]), c_axis=np.array([[0.0, 0.0, 1.0]]),
                   euler_bunge=None, electrodes=electrodes, voxel_size_m=micro.voxel_size_m * f,
                   thickness_m=micro.thickness_m)


def upsample_field(coarse_field, micro: Microstructure, factor: int) -> np.ndarray:
    """Field (V/m, (ny, nx, 2)) on the fine grid of ``micro`` from the field of
    :func:`coarse_uniform`: each fine voxel takes its coarse voxel's value, or where that is an
    electrode or vacuum (field 0 or NaN), the nearest coarse lamella voxel's; then 0 in the fine
    electrodes and NaN in vacuum, as :func:`insitu.analysis.transport.simulator.simulate` gives it.

    Example
    -------
    >>> E = upsample_field(Ec, micro, 4)   # doctest: +SKIP
    """
    from scipy.ndimage import distance_transform_edt

    ny, nx = micro.shape
    f = int(factor)
    # coarse electrode voxels (field 0) also hold fine conducting voxels: those take the field of the
    # nearest coarse voxel inside the lamella
    inside = np.isfinite(coarse_field[..., 0]) & ((coarse_field[..., 0] != 0.0) | (coarse_field[..., 1] != 0.0))
    if inside.any() and not inside.all():
        iy, ix = distance_transform_edt(~inside, return_distances=False, return_indices=True)
        coarse_field = coarse_field[iy, ix]
    E = block_upsample(coarse_field, f)[:ny, :nx]
    el = np.zeros((ny, nx), bool)
    for e in micro.electrodes.values():
        el |= e
    E[el] = 0.0
    E[(micro.grains == VACUUM) & ~el] = np.nan
    return E
