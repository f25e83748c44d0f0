"""A paper-like synthetic lamella: Voronoi grains, ZrO2 discs, backbone frame, top and right electrodes.

Used by the tests, the simulator benchmark and the virtual specimen.
"""
from __future__ import annotations

import numpy as np

from insitu.analysis.transport.microstructure import BACKBONE, VACUUM, ZRO2, Microstructure, c_axis_from_euler


def random_euler(n: int, rng) -> np.ndarray:
    """``n`` uniformly random orientations as Bunge Euler angles (radians), shape (n, 3)."""
    phi1 = rng.uniform(0, 2 * np.pi, n)
    Phi = np.arccos(rng.uniform(-1.0, 1.0, n))
    phi2 = rng.uniform(0, 2 * np.pi, n)
    return np.stack([phi1, Phi, phi2], axis=1)


def voronoi_labels(shape, n_grains: int, rng, region=None) -> np.ndarray:
    """Voronoi grain ids 1..n_grains on ``shape`` (seeds uniform inside ``region`` = (y0, y1, x0, x1))."""
    from scipy.spatial import cKDTree

    ny, nx = shape
    y0, y1, x0, x1 = region if region is not None else (0, ny, 0, nx)
    seeds = np.column_stack([rng.uniform(y0, y1, n_grains), rng.uniform(x0, x1, n_grains)])
    tree = cKDTree(seeds)
    labels = np.empty((ny, nx), np.int32)
    xs = np.arange(nx, dtype=float) + 0.5
    step = max(1, 2_000_000 // max(nx, 1))
    for r0 in range(0, ny, step):
        rows = np.arange(r0, min(ny, r0 + step), dtype=float) + 0.5
        yy, xx = np.meshgrid(rows, xs, indexing="ij")
        _, idx = tree.query(np.column_stack([yy.ravel(), xx.ravel()]), workers=-1)
        labels[r0:r0 + rows.size] = (idx + 1).reshape(rows.size, nx)
    return labels


def voronoi_lamella(shape=(256, 256), n_grains: int = 20, seed: int = 0, zro2: int | None = None,
                    backbone_width: int | None = None, electrodes=("top", "right"),
                    voxel_size_m: float | None = None, zro2_radius: float | None = None,
                    electrode_width: int | None = None, **attrs) -> Microstructure:
    """Build a lamella like the paper's (Ding et al. 2023, Fig. 3 and 7).

    Layout (rows down): a thin window of Voronoi grains with random 3-D orientations and a few
    ZrO2 discs (-1); a backbone frame (-2) of ``backbone_width`` voxels along the left, bottom and
    right edges; the Au(Pt) electrode ``"top"`` covering the top ``electrode_width`` rows; the Na
    source ``"right"`` covering the last ``electrode_width`` columns below a vacuum gap (so the
    two electrodes do not touch).

    Parameters
    ----------
    shape : (ny, nx)
    n_grains : int
        Number of Voronoi seeds in the window.
    seed : int
        Random seed (same seed, same lamella).
    zro2 : int, optional
        Number of ZrO2 discs (default ``max(1, n_grains // 4)``; 0 for none).
    backbone_width : int, optional
        Frame width in voxels (default ``max(1, min(shape) // 32)``; 0 gives the paper's "reduced" system).
    electrodes : sequence of {"top", "right"}
        Electrodes to create.
    voxel_size_m : float, optional
        Voxel edge (default: the 5 µm window spans the grid width).
    zro2_radius : float, optional
        Disc radius in voxels (default ``min(shape) / 60``, at least 1).
    electrode_width : int, optional
        Electrode thickness in voxels (default ``max(1, min(shape) // 128)``).
    **attrs
        Any further Microstructure attribute (sigma_ip, anisotropy, gb_ratio, ...).

    Returns
    -------
    Microstructure

    Example
    -------
    >>> m = voronoi_lamella((128, 128), n_grains=20, seed=1)
    >>> sorted(m.electrodes)
    ['right', 'top']
    """
    ny, nx = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    short = min(ny, nx)
    bw = max(1, short // 32) if backbone_width is None else int(backbone_width)
    ew = max(1, short // 128) if electrode_width is None else int(electrode_width)
    n_zro2 = max(1, n_grains // 4) if zro2 is None else int(zro2)
    rad = max(1.0, short / 60.0) if zro2_radius is None else float(zro2_radius)
    if voxel_size_m is None:
        voxel_size_m = 5e-6 / nx
    unknown = set(electrodes) - {"top", "right"}
    if unknown:
        raise ValueError(f"voronoi_lamella knows electrodes 'top' and 'right', not {sorted(unknown)}")

    # window (grains) inside the frame: rows [ew, ny - bw), cols [bw, nx - bw - ew)
    wy0, wy1, wx0, wx1 = ew, ny - bw, bw, nx - bw - ew
    if wy1 - wy0 < 2 or wx1 - wx0 < 2:
        raise ValueError(f"shape {shape} too small for backbone_width={bw} and electrode_width={ew}")
    grains = np.full((ny, nx), BACKBONE, np.int32)
    grains[:, wx0:wx1][wy0:wy1] = voronoi_labels((wy1 - wy0, wx1 - wx0), n_grains, rng)

    # ZrO2 discs inside the window
    if n_zro2:
        cy = rng.uniform(wy0 + rad, max(wy0 + rad + 1, wy1 - rad), n_zro2)
        cx = rng.uniform(wx0 + rad, max(wx0 + rad + 1, wx1 - rad), n_zro2)
        yy, xx = np.ogrid[:ny, :nx]
        for y, x in zip(cy, cx):
            y0, y1 = int(max(0, y - rad - 1)), int(min(ny, y + rad + 2))
            x0, x1 = int(max(0, x - rad - 1)), int(min(nx, x + rad + 2))
            sub = (yy[y0:y1] + 0.5 - y) ** 2 + (xx[:, x0:x1] + 0.5 - x) ** 2 <= rad ** 2
            region = grains[y0:y1, x0:x1]
            region[sub & (region > 0)] = ZRO2

    el = {}
    gap = max(2, ew)
    if "top" in electrodes:
        top = np.zeros((ny, nx), bool)
        top[:ew, :nx - ew if "right" in electrodes else nx] = True
        el["top"] = top
        grains[:ew] = VACUUM  # the coating itself: nothing but the electrode conducts here
    if "right" in electrodes:
        right = np.zeros((ny, nx), bool)
        r0 = ew + gap if "top" in electrodes else 0
        right[r0:, nx - ew:] = True
        el["right"] = right
        grains[:r0, nx - ew:] = VACUUM  # gap between the two electrodes
    if "top" in el:
        grains[:ew, nx - ew:] = VACUUM

    present = np.unique(grains[grains > 0])
    euler = random_euler(n_grains, rng)[present - 1]
    return Microstructure(grains=grains, grain_ids=present.astype(np.int32), c_axis=c_axis_from_euler(euler),
                          electrodes=el, voxel_size_m=float(voxel_size_m), thickness_m=attrs.pop("thickness_m", 170e-9),
                          euler_bunge=euler, **attrs)
