"""PNG figures of a simulation (matplotlib, Agg): potential, log |j|, GB network coloured by jump."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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

    from insitu.analysis.microstructure import boundary_pixels

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h = result.voxel_size_m
    ext = _extent(result.potential.shape, h)
    paths = {}

    def electrodes_outline(ax):
        for name, mask in micro.electrodes.items():
            ax.contour(mask.astype(float), levels=[0.5], colors="gold", linewidths=1.0, extent=ext, origin="upper")
            ys, xs = np.nonzero(mask)
            ax.text(xs.mean() * h * 1e6, ys.mean() * h * 1e6, name, color="gold", fontsize=8, ha="center")

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
    for gid in micro.grain_ids:
        ys, xs = np.nonzero(g == gid)
        if ys.size:
            ax.text((xs.mean() + 0.5) * h * 1e6, (ys.mean() + 0.5) * h * 1e6, f"G{gid}", fontsize=6,
                    ha="center", va="center")
    electrodes_outline(ax)
    ax.set(title="GB network coloured by current jump", xlabel="x (µm)", ylabel="y (µm)")
    paths["gb_network"] = out / "gb_network.png"
    fig.savefig(paths["gb_network"], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths
