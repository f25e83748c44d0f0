"""PNG figures of a simulation (matplotlib, Agg): potential, log |j|, GB network coloured by jump."""
from __future__ import annotations

from pathlib import Path

import numpy as np


#: a grain is labelled only when its equivalent diameter is at least this fraction of the map's edge
LABEL_MIN_DIAMETER_FRACTION = 0.05
#: and at most this many labels (the largest grains first)
MAX_GRAIN_LABELS = 60


def legible_grain_labels(grains: np.ndarray, grain_ids) -> list[tuple[int, float, float]]:
    """``(grain id, x, y)`` (pixel centroids) of the grains large enough to carry a legible label.

    Parameters
    ----------
    grains : (ny, nx) int array
        Grain id per pixel (≤ 0: no grain).
    grain_ids : iterable of int
        The grains that may be labelled.

    Examples
    --------
    >>> g = np.zeros((100, 100), int); g[:, :50] = 1; g[:, 50:] = 2; g[0, 0] = 3
    >>> [gid for gid, x, y in legible_grain_labels(g, [1, 2, 3])]     # grain 3 (one pixel) is too small
    [1, 2]
    """
    g = np.asarray(grains)
    ids = np.asarray([int(i) for i in grain_ids if int(i) > 0], int)
    if ids.size == 0:
        return []
    flat = np.where(g > 0, g, 0).ravel()
    n = int(max(flat.max(), ids.max())) + 1
    area = np.bincount(flat, minlength=n).astype(float)
    yy, xx = np.divmod(np.arange(flat.size), g.shape[1])
    sx, sy = np.bincount(flat, weights=xx, minlength=n), np.bincount(flat, weights=yy, minlength=n)
    min_area = np.pi / 4 * (LABEL_MIN_DIAMETER_FRACTION * max(g.shape)) ** 2
    keep = [i for i in ids if area[i] >= min_area]
    keep = sorted(keep, key=lambda i: -area[i])[:MAX_GRAIN_LABELS]
    return [(int(i), sx[i] / area[i], sy[i] / area[i]) for i in sorted(keep)]


def _extent(shape, h):
    ny, nx = shape
    return (0, nx * h * 1e6, ny * h * 1e6, 0)   # µm, rows down


def plot_result(result, micro, out_dir) -> dict:
    """Write potential.png, current_density.png and gb_network.png into ``out_dir``; return their paths.

    Example
    -------
    >>> plot_result(simulate(m, {"top": 0, "right": 1}), m, "out")   # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, TwoSlopeNorm

    from insitu.analysis.transport.microstructure import boundary_pixels

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h = result.voxel_size_m
    ext = _extent(result.potential.shape, h)
    paths = {}

    from insitu.analysis.transport.outline import black_outline

    outline = black_outline()

    def electrodes_outline(ax):
        # white with a black rim: legible on every colour map used here (was gold on viridis' yellow)
        for name, mask in micro.electrodes.items():
            ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.2, extent=ext, origin="upper")
            ys, xs = np.nonzero(mask)
            ax.text(xs.mean() * h * 1e6, ys.mean() * h * 1e6, name, color="white", fontsize=9, fontweight="bold",
                    ha="center", va="center", path_effects=outline)

    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(result.potential, cmap="viridis", extent=ext)
    electrodes_outline(ax)
    fig.colorbar(im, ax=ax, label="potential (V)")
    ax.set(title=f"Potential ({result.model} model)", xlabel="x (µm)", ylabel="y (µm)")
    paths["potential"] = out / "potential.png"
    fig.savefig(paths["potential"], dpi=120, bbox_inches="tight")
    plt.close(fig)

    j = result.j_abs
    pos = j[j > 0]
    fig, ax = plt.subplots(figsize=(6, 5))
    if pos.size:
        lo = max(pos.min(), pos.max() * 1e-6)
        im = ax.imshow(np.where(j > 0, j, np.nan), cmap="inferno", norm=LogNorm(lo, pos.max()), extent=ext)
        fig.colorbar(im, ax=ax, label="|j| (A/m²)")
    electrodes_outline(ax)
    ax.set(title="Current density |j| (log scale)", xlabel="x (µm)", ylabel="y (µm)")
    paths["current_density"] = out / "current_density.png"
    fig.savefig(paths["current_density"], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    g = micro.grains
    ax.imshow(np.where(g > 0, 0.92, np.where(g == -1, 0.6, np.where(g == -2, 0.8, 1.0))), cmap="gray", vmin=0,
              vmax=1, extent=ext)
    gt = result.gb_table
    bp = boundary_pixels(np.where(np.isfinite(result.potential) & (g > 0), g, 0))
    if gt["grain_a"].size and bp["x"].size:
        lookup = {(int(a), int(b)): float(v) for a, b, v in zip(gt["grain_a"], gt["grain_b"], gt["jump"])}
        jump = np.array([lookup.get((int(a), int(b)), np.nan) for a, b in zip(bp["grain_a"], bp["grain_b"])])
        lim = np.nanmax(np.abs(jump)) or 1.0
        size = max(2.0, (120.0 / max(g.shape)) ** 2)
        sc = ax.scatter((bp["x"] + 0.5) * h * 1e6, (bp["y"] + 0.5) * h * 1e6, c=jump, s=size, cmap="coolwarm",
                        norm=TwoSlopeNorm(0.0, -lim, lim))
        fig.colorbar(sc, ax=ax, label="GB current jump j_a − j_b (A/m²)")
    labels = legible_grain_labels(g, micro.grain_ids)
    for gid, x, y in labels:
        ax.text((x + 0.5) * h * 1e6, (y + 0.5) * h * 1e6, f"G{gid}", fontsize=6, ha="center", va="center")
    n_grains = int(np.count_nonzero(np.asarray(micro.grain_ids) > 0))
    if len(labels) < n_grains:
        ax.text(0.0, -0.17, f"{len(labels)} of {n_grains} grains labelled (the ones large enough to read)",
                transform=ax.transAxes, fontsize=7, color="0.3")
    electrodes_outline(ax)
    ax.set(title="GB network coloured by current jump", xlabel="x (µm)", ylabel="y (µm)")
    paths["gb_network"] = out / "gb_network.png"
    fig.savefig(paths["gb_network"], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths
