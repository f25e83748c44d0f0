"""One self-contained HTML page (figures as base64 PNG) summarising an analysis.

Figures: first and last frame with the seeds marked, a differential image,
drift against time, seed appearance times on the bias/current curve (sessions),
the GB map coloured by the simulated current jump with the seeds, and the
correlation statistics. Missing inputs leave their figure out with a note.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from insitu.core.units import count

__all__ = ["write_report"]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _robust_limits(img: np.ndarray):
    v = np.asarray(img, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _mark(ax, seeds: dict, dx: float = 0.0, dy: float = 0.0, only_before: int | None = None):
    if not len(seeds.get("id", [])):
        return
    sel = np.ones(len(seeds["id"]), bool)
    if only_before is not None:
        sel = np.asarray(seeds["first_frame"]) <= only_before
    x = np.asarray(seeds["x_px"])[sel] + dx
    y = np.asarray(seeds["y_px"])[sel] + dy
    sign = np.asarray(seeds["sign"])[sel]
    r = np.sqrt(np.maximum(np.asarray(seeds["area_px"])[sel], 4) / np.pi) + 3
    from matplotlib.patches import Circle

    from insitu.analysis.transport.outline import black_outline

    outline = black_outline()
    for xi, yi, si, ri, sid in zip(x, y, sign, r, np.asarray(seeds["id"])[sel]):
        ax.add_patch(Circle((xi, yi), ri, fill=False, lw=1.4, color="#ff3030" if si > 0 else "#30a0ff"))
        # seed numbers: white on a black outline, legible on any grey
        ax.text(xi + ri, yi - ri, str(sid), color="white", fontsize=9, fontweight="bold", path_effects=outline)


def _scale_bar(ax, pixel_size_m: float | None, width_px: int) -> None:
    """A 1-2-5 scale bar about a fifth of the image wide (nothing when the pixel size is unknown)."""
    if pixel_size_m is None or not (pixel_size_m > 0 and np.isfinite(pixel_size_m)):
        return
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    from insitu.analysis.transport.outline import black_outline
    from insitu.core.units import format_length, nice_length

    length_m = nice_length(0.2 * width_px * pixel_size_m)
    bar = AnchoredSizeBar(ax.transData, length_m / pixel_size_m, format_length(length_m), "lower left",
                          pad=0.6, color="white", frameon=False, size_vertical=max(1.0, width_px / 150),
                          fontproperties={"size": 10, "weight": "bold"})
    bar.txt_label._text.set_path_effects(black_outline())
    for rect in bar.size_bar.get_children():       # a black rim: visible on light and dark images alike
        rect.set_edgecolor("black")
        rect.set_linewidth(1.0)
    ax.add_artist(bar)


def write_report(path, *, title: str, source: str, n_frames: int, seeds: dict, drift: dict,
                 first_frame: np.ndarray | None = None, last_frame: np.ndarray | None = None,
                 last_drift=(0.0, 0.0), differential: np.ndarray | None = None, differential_index: int | None = None,
                 bias: dict | None = None, gb_map: dict | None = None, stats: dict | None = None,
                 notes: list[str] | None = None, params: dict | None = None,
                 pixel_size_m: float | None = None) -> Path:
    """Write ``path`` (HTML) and return it.

    Parameters
    ----------
    title, source : page title and what was analysed.
    n_frames : frames analysed.
    seeds : seeds table (seeds.csv columns).
    drift : ``frame, time_s, dx_px, dy_px``.
    first_frame, last_frame : images; seeds are drawn in first-frame coordinates, shifted by
        ``last_drift`` on the last frame.
    differential, differential_index : one differential image (σ) and its frame number.
    bias : ``time, voltage, current`` (s, V, A) for sessions.
    gb_map : ``grains`` (map), ``jump_map`` (jump per pixel, NaN off boundaries), ``seeds_x``, ``seeds_y``
        (in map pixels) and optionally ``electrodes`` (name -> mask).
    stats : from :func:`insitu.analysis.correlate.gb_statistics` (lists ``controls_for``,
        ``does_not_control`` and optional ``caveats`` are shown as lists).
    notes : sentences shown at the top (e.g. why nothing was found).
    params : analysis parameters, listed at the end.
    pixel_size_m : frame pixel size (m), for the scale bars (none when unknown).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    parts: list[str] = []
    n_seeds = len(seeds.get("id", []))
    parts.append(f"<h1>{html.escape(title)}</h1>")
    parts.append(f"<p>Input: <code>{html.escape(str(source))}</code> — {count(n_frames, 'frame')}, "
                 f"<b>{n_seeds} seed{'s' if n_seeds != 1 else ''}</b> found.</p>")
    for n in notes or []:
        parts.append(f'<p class="note">{html.escape(n)}</p>')

    # first / last frame with seeds
    if first_frame is not None:
        ncol = 2 if last_frame is not None else 1
        fig, axes = plt.subplots(1, ncol, figsize=(5 * ncol, 5))
        axes = np.atleast_1d(axes)
        lo, hi = _robust_limits(first_frame)
        axes[0].imshow(first_frame, cmap="gray", vmin=lo, vmax=hi)
        axes[0].set_title("first frame, all seeds (red brighter, blue darker)")
        _mark(axes[0], seeds)
        _scale_bar(axes[0], pixel_size_m, first_frame.shape[1])
        if last_frame is not None:
            lo, hi = _robust_limits(last_frame)
            axes[1].imshow(last_frame, cmap="gray", vmin=lo, vmax=hi)
            axes[1].set_title("last frame, seeds at their drifted place")
            _mark(axes[1], seeds, *last_drift)
            _scale_bar(axes[1], pixel_size_m, last_frame.shape[1])
        for a in axes:
            a.set_axis_off()
        parts.append("<h2>Frames and seeds</h2>" + _img(_png(fig), "first and last frame"))

    if differential is not None:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        im = ax.imshow(differential, cmap="RdBu_r", vmin=-8, vmax=8)
        fig.colorbar(im, ax=ax, label="change (σ)")
        if differential_index is not None:
            _mark(ax, seeds, only_before=differential_index)
        _scale_bar(ax, pixel_size_m, differential.shape[1])
        ax.set_title(f"differential image, frame {differential_index}")
        ax.set_axis_off()
        parts.append("<h2>Differential image</h2>" + _img(_png(fig), "differential image"))

    if len(drift.get("frame", [])):
        fig, ax = plt.subplots(figsize=(7, 3))
        t = np.asarray(drift["time_s"])
        ax.plot(t, drift["dx_px"], label="dx")
        ax.plot(t, drift["dy_px"], label="dy")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("drift (px)")
        ax.legend()
        ax.grid(alpha=0.3)
        parts.append("<h2>Drift</h2>" + _img(_png(fig), "drift"))

    if bias is not None and len(bias.get("time", [])):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot(bias["time"], bias["voltage"], color="C0", lw=1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("bias (V)", color="C0")
        ax2 = ax.twinx()
        from insitu.core.units import current_scale

        cur = np.asarray(bias["current"], float)
        scale, unit = current_scale(np.nanmax(np.abs(cur)) if np.isfinite(cur).any() else 0.0)
        ax2.plot(bias["time"], cur / scale, color="C1", lw=1)
        ax2.set_ylabel(f"current ({unit})", color="C1")
        ax2.ticklabel_format(axis="y", useOffset=False, style="plain")   # no "×1e7" offset on the axis
        for t0, s in zip(np.asarray(seeds.get("first_time_s", [])), np.asarray(seeds.get("sign", []))):
            ax.axvline(t0, color="#ff3030" if s > 0 else "#30a0ff", lw=0.8, alpha=0.8)
        ax.set_title("seed appearance times (vertical lines) on bias and current")
        parts.append("<h2>Seeds in time</h2>" + _img(_png(fig), "bias and seeds"))
    elif n_seeds:
        fig, ax = plt.subplots(figsize=(7, 2.5))
        ax.hist(np.asarray(seeds["first_time_s"]), bins=min(30, max(5, n_seeds)))
        ax.set_xlabel("first seen (s)")
        ax.set_ylabel("seeds")
        parts.append("<h2>Seeds in time</h2>" + _img(_png(fig), "seed times"))

    if gb_map is not None:
        fig, ax = plt.subplots(figsize=(6, 5.5))
        g = np.asarray(gb_map["grains"])
        ax.imshow(np.where(g > 0, 0.85, 0.55), cmap="gray", vmin=0, vmax=1)
        jm = np.asarray(gb_map["jump_map"], float)
        im = ax.imshow(np.ma.masked_invalid(jm), cmap="inferno")
        fig.colorbar(im, ax=ax, label="GB current jump |j_a − j_b| (A/m²)")
        from matplotlib.lines import Line2D

        handles = []
        for name, m in (gb_map.get("electrodes") or {}).items():
            ax.contour(np.asarray(m, float), levels=[0.5], colors="cyan", linewidths=1)
        if gb_map.get("electrodes"):
            handles.append(Line2D([], [], color="cyan", lw=1.5,
                                  label="electrodes (" + ", ".join(map(str, gb_map["electrodes"])) + ")"))
        ax.scatter(gb_map["seeds_x"], gb_map["seeds_y"], s=40, facecolors="none", edgecolors="lime")
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="lime", ms=8, label="seeds"))
        handles.append(Line2D([], [], color="0.85", lw=6, label="grains"))
        handles.append(Line2D([], [], color="0.55", lw=6, label="no grain (ZrO₂, vacuum)"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.02), ncol=2, fontsize=8,
                  frameon=False)
        ax.set_title("GB map coloured by jump, seeds (green)")
        ax.set_axis_off()
        parts.append("<h2>Seeds on the GB map</h2>" + _img(_png(fig), "GB map"))

    if stats is not None:
        parts.append(_stats_section(stats))

    if n_seeds:
        cols = list(seeds.keys())
        head = "".join(f"<th>{c}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(seeds[c][i])}</td>" for c in cols) + "</tr>"
                       for i in range(min(n_seeds, 200)))
        parts.append(f"<h2>Seeds</h2><table><tr>{head}</tr>{body}</table>")
    if params:
        parts.append("<h2>Parameters</h2><p>" + html.escape(", ".join(f"{k}={v}" for k, v in params.items()))
                     + "</p>")

    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
             ".note{background:#fff4d0;padding:0.5em;border-left:4px solid #e0a000}img{max-width:100%}")
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    path = Path(path)
    path.write_text(doc, encoding="utf-8")
    return path


def _stats_section(stats: dict) -> str:
    """The correlation section: the GB-level result, then what the test controls for and what it does not."""
    lists = {k: stats[k] for k in ("controls_for", "does_not_control", "caveats") if k in stats}
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in stats.items() if k not in lists)
    p = stats.get("p_value")
    head = ("<h2>Statistics</h2><p>Do GBs that carry seeds have a larger simulated driving force than GBs "
            "equally connected to, and as far from, the negative electrode? The GB is the unit: a GB with "
            "several seeds counts once; seeds at the electrode interface are counted apart and left out. "
            "AUC 0.5 = no difference, 1 = every seed-carrying GB beats every control GB of its stratum; "
            "p from an exact stratified rank test over GBs"
            + ("" if p is not None else f" (<b>{html.escape(str(stats.get('p_value_note') or 'no p-value'))}</b>)")
            + ".</p>")

    def ul(title, items):
        return f"<h3>{title}</h3><ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ul>"

    out = head + f"<table>{rows}</table>"
    for key, title in (("caveats", "Read this first"), ("controls_for", "What the test controls for"),
                       ("does_not_control", "What it does not control for")):
        if lists.get(key):
            out += ul(title, lists[key])
    return out


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)
