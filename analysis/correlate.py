"""Seeds against the simulated grain-boundary current jumps and the electrodes.

Everything here works on plain arrays: a grain map (``0`` vacuum, ``>0`` grain
ids, negative ids other phases), a GB table (dict of arrays with at least
``grain_a, grain_b, jump``; the simulator's gb.csv), electrode masks and seed
positions. Positions are pixels of the microstructure map (x = column, y = row,
pixel centres at integers) unless a :class:`MapTransform` says how the map sits
on the frames.

The question asked (DOMAIN.md, "What is observed"): do seeds sit on GBs with
larger simulated current jumps than GB points that are just as far from the
negative electrode (electron supply)? :func:`jump_statistics` answers with a
distance-matched ROC AUC and a stratified permutation p-value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from insitu.errors import UserError

__all__ = ["MapTransform", "parse_map_transform", "gb_point_table", "electrode_distances", "correlate_seeds",
           "roc_auc", "jump_statistics", "negative_electrode"]


@dataclass(frozen=True)
class MapTransform:
    """Microstructure pixel -> frame pixel: ``frame = scale · R(rotation) · micro + offset``.

    Example
    -------
    >>> t = MapTransform(scale=2.0, rotation_deg=90.0, offset_x=10.0, offset_y=0.0)
    >>> [round(float(v), 6) for v in t.to_frame(1.0, 0.0)]
    [10.0, 2.0]
    >>> [round(float(v), 6) for v in t.to_micro(10.0, 2.0)]
    [1.0, 0.0]
    """

    scale: float = 1.0
    rotation_deg: float = 0.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_frame(self, x, y):
        c, s = np.cos(np.radians(self.rotation_deg)), np.sin(np.radians(self.rotation_deg))
        x, y = np.asarray(x, float), np.asarray(y, float)
        return self.scale * (c * x - s * y) + self.offset_x, self.scale * (s * x + c * y) + self.offset_y

    def to_micro(self, x, y):
        c, s = np.cos(np.radians(self.rotation_deg)), np.sin(np.radians(self.rotation_deg))
        u = (np.asarray(x, float) - self.offset_x) / self.scale
        v = (np.asarray(y, float) - self.offset_y) / self.scale
        return c * u + s * v, -s * u + c * v

    @property
    def is_identity(self) -> bool:
        return self == MapTransform()


def parse_map_transform(text: str) -> MapTransform:
    """``"scale,rotation_deg,offset_x,offset_y"`` (px, degrees) -> :class:`MapTransform`.

    Example
    -------
    >>> parse_map_transform("0.5, 10, 3, -4")
    MapTransform(scale=0.5, rotation_deg=10.0, offset_x=3.0, offset_y=-4.0)
    """
    parts = [p for p in str(text).replace(";", ",").split(",") if p.strip()]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"--map-transform {text!r}: expected four numbers 'scale,rotation_deg,offset_x,offset_y'") \
            from None
    if len(vals) != 4:
        raise UserError(f"--map-transform {text!r}: expected four numbers 'scale,rotation_deg,offset_x,offset_y'")
    if not vals[0] > 0:
        raise UserError(f"--map-transform {text!r}: scale must be > 0")
    return MapTransform(*vals)


def _pair_index(gb_table: dict) -> dict[tuple[int, int], int]:
    a = np.asarray(gb_table["grain_a"], int)
    b = np.asarray(gb_table["grain_b"], int)
    return {(min(p, q), max(p, q)): i for i, (p, q) in enumerate(zip(a, b))}


def gb_point_table(bpix: dict, gb_table: dict) -> dict[str, np.ndarray]:
    """Attach each boundary point (from ``boundary_pixels``) to its row of the GB table.

    Returns ``x, y, grain_a, grain_b, row`` (row −1 when the pair is not in the table) and ``jump``
    (NaN there).

    Example
    -------
    >>> bp = dict(x=np.array([0.5]), y=np.array([0.0]), grain_a=np.array([1]), grain_b=np.array([2]))
    >>> gb_point_table(bp, dict(grain_a=[2], grain_b=[1], jump=[7.0]))["jump"]
    array([7.])
    """
    idx = _pair_index(gb_table)
    ga = np.asarray(bpix["grain_a"], int)
    gbb = np.asarray(bpix["grain_b"], int)
    row = np.array([idx.get((min(p, q), max(p, q)), -1) for p, q in zip(ga, gbb)], int)
    jump_col = np.asarray(gb_table["jump"], float)
    jump = np.where(row >= 0, jump_col[np.maximum(row, 0)] if len(jump_col) else np.nan, np.nan)
    return dict(x=np.asarray(bpix["x"], float), y=np.asarray(bpix["y"], float), grain_a=ga, grain_b=gbb,
                row=row, jump=jump)


def electrode_distances(electrodes: dict) -> dict[str, np.ndarray]:
    """Euclidean distance (px) of every pixel to each electrode mask."""
    out = {}
    for name, mask in electrodes.items():
        m = np.asarray(mask, bool)
        out[name] = ndi.distance_transform_edt(~m) if m.any() else np.full(m.shape, np.inf)
    return out


def _sample(dist_map: np.ndarray, x, y) -> np.ndarray:
    """Nearest-pixel sample of a map at (x, y); NaN outside."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ix = np.rint(x).astype(int)
    iy = np.rint(y).astype(int)
    ok = (ix >= 0) & (iy >= 0) & (ix < dist_map.shape[1]) & (iy < dist_map.shape[0])
    out = np.full(x.shape, np.nan)
    out[ok] = dist_map[iy[ok], ix[ok]]
    return out


def negative_electrode(potentials: dict) -> str | None:
    """Name of the electrode at the lowest potential (None when fewer than two differ)."""
    if not potentials or len(set(potentials.values())) < 2:
        return None
    return min(potentials, key=lambda k: potentials[k])


def correlate_seeds(seeds: dict, grains: np.ndarray, gb_table: dict, electrodes: dict,
                    transform: MapTransform | None = None, bpix: dict | None = None,
                    max_gb_distance_px: float = 5.0) -> dict[str, np.ndarray]:
    """For each seed: nearest GB (grain pair), its distance, jump, delta_phi, type, blocking, electrode distances.

    Parameters
    ----------
    seeds : dict with ``id, x_px, y_px`` (frame pixels).
    grains : grain map (microstructure pixels).
    gb_table : GB table (``grain_a, grain_b, jump`` and optionally ``delta_phi, gb_type, blocking``).
    electrodes : name -> bool mask on the grain map.
    transform : how the map sits on the frames (default: the same pixels).
    bpix : boundary points (``boundary_pixels(grains)``), computed when not given.
    max_gb_distance_px : seeds farther than this from any GB get ``on_gb = False``.

    Returns
    -------
    dict of arrays: ``seed_id, x_px, y_px, x_map, y_map, grain_a, grain_b, gb_distance_px, on_gb, jump,
    delta_phi, gb_type, blocking`` and ``dist_<electrode>_px`` per electrode.
    """
    if bpix is None:
        from insitu.analysis.microstructure import boundary_pixels
        bpix = boundary_pixels(grains)
    t = transform or MapTransform()
    sx = np.asarray(seeds["x_px"], float)
    sy = np.asarray(seeds["y_px"], float)
    mx, my = t.to_micro(sx, sy)
    n = len(sx)
    pts = gb_point_table(bpix, gb_table)
    out: dict[str, np.ndarray] = dict(seed_id=np.asarray(seeds.get("id", np.arange(1, n + 1)), int),
                                      x_px=sx, y_px=sy, x_map=mx, y_map=my)
    idx = _pair_index(gb_table)
    if len(pts["x"]) and n:
        tree = cKDTree(np.column_stack([pts["x"], pts["y"]]))
        d, j = tree.query(np.column_stack([mx, my]))
        ga, gbb = pts["grain_a"][j], pts["grain_b"][j]
        row = np.array([idx.get((int(a), int(b)), -1) for a, b in zip(ga, gbb)], int)
    else:
        d = np.full(n, np.inf)
        ga = gbb = np.zeros(n, int)
        row = np.full(n, -1)
    out["grain_a"], out["grain_b"], out["gb_distance_px"] = ga, gbb, d
    out["on_gb"] = (d <= max_gb_distance_px) & (row >= 0)

    def col(name, fill, dtype):
        c = gb_table.get(name)
        if c is None or len(c) == 0:
            return np.full(n, fill, dtype=dtype)
        c = np.asarray(c)
        return np.array([c[r] if r >= 0 else fill for r in row], dtype=dtype)

    out["jump"] = col("jump", np.nan, float)
    out["delta_phi"] = col("delta_phi", np.nan, float)
    out["gb_type"] = col("gb_type", "", object).astype(str)
    out["blocking"] = col("blocking", False, bool)
    for name, dm in electrode_distances(electrodes).items():
        out[f"dist_{name}_px"] = _sample(dm, mx, my)
    return out


def roc_auc(positive, negative) -> float:
    """Area under the ROC curve = P(positive > negative) + ½ P(tie) (Mann–Whitney).

    Example
    -------
    >>> roc_auc([3, 4], [1, 2])
    1.0
    >>> roc_auc([1, 2], [1, 2])
    0.5
    """
    p = np.asarray(positive, float)[:, None]
    q = np.asarray(negative, float)[None, :]
    if p.size == 0 or q.size == 0:
        return float("nan")
    return float(np.mean((p > q) + 0.5 * (p == q)))


def jump_statistics(seed_jump, seed_dist, gb_jump, gb_dist, n_controls: int = 20, n_perm: int = 2000,
                    tol_px: float | None = None, seed: int = 0) -> dict:
    """Are seed GB jumps larger than those of GB points at the same distance from the negative electrode?

    For each seed, ``n_controls`` GB points are drawn whose distance to the negative electrode is within
    ``tol_px`` of the seed's (else the nearest in distance). The AUC compares each seed's jump with its own
    controls (P(seed > control), ties ½). The p-value (one-sided, larger jumps) comes from permutations
    that swap, within each seed's stratum, which value is called the seed.

    Parameters
    ----------
    seed_jump, seed_dist : jump and distance (px) of each seed's GB.
    gb_jump, gb_dist : the same for every GB point (the population).
    n_controls, n_perm : controls per seed; permutations.
    tol_px : distance matching tolerance (default 5 % of the distance range, at least 2 px).
    seed : random seed.

    Returns
    -------
    dict: ``auc, p_value, n_seeds, n_controls, n_perm, tol_px, mean_seed_jump, mean_control_jump``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> gj, gd = rng.random(1000), rng.random(1000) * 100
    >>> top = np.argsort(gj)[-15:]
    >>> r = jump_statistics(gj[top], gd[top], gj, gd)
    >>> r["auc"] > 0.95 and r["p_value"] < 0.01
    True
    """
    sj = np.asarray(seed_jump, float)
    sd = np.asarray(seed_dist, float)
    gj = np.asarray(gb_jump, float)
    gd = np.asarray(gb_dist, float)
    ok = np.isfinite(sj) & np.isfinite(sd)
    sj, sd = sj[ok], sd[ok]
    good = np.isfinite(gj) & np.isfinite(gd)
    gj, gd = gj[good], gd[good]
    res = dict(auc=float("nan"), p_value=float("nan"), n_seeds=int(len(sj)), n_controls=int(n_controls),
               n_perm=int(n_perm), tol_px=float("nan"), mean_seed_jump=float(np.mean(sj)) if len(sj) else
               float("nan"), mean_control_jump=float("nan"))
    if len(sj) == 0 or len(gj) < 2:
        return res
    rng = np.random.default_rng(seed)
    if tol_px is None:
        span = float(np.ptp(gd)) if len(gd) else 0.0
        tol_px = max(2.0, 0.05 * span)
    res["tol_px"] = float(tol_px)
    order = np.argsort(gd)
    gd_sorted = gd[order]
    controls = np.empty((len(sj), n_controls))
    for i, d in enumerate(sd):
        lo = np.searchsorted(gd_sorted, d - tol_px, "left")
        hi = np.searchsorted(gd_sorted, d + tol_px, "right")
        if hi - lo < n_controls:  # widen to the n_controls nearest in distance
            c = np.searchsorted(gd_sorted, d)
            lo = max(0, c - n_controls)
            hi = min(len(gd_sorted), c + n_controls)
            cand = order[lo:hi]
            cand = cand[np.argsort(np.abs(gd[cand] - d))[:n_controls]]
        else:
            cand = order[lo:hi]
        pick = rng.choice(cand, n_controls, replace=len(cand) < n_controls)
        controls[i] = gj[pick]
    vals = np.column_stack([sj, controls])               # (n, m+1); column 0 is the seed

    def auc_of(pseudo_idx):
        p = vals[np.arange(len(vals)), pseudo_idx][:, None]
        gt = (p > vals).sum(axis=1)
        eq = (p == vals).sum(axis=1) - 1                  # minus the self comparison
        return float(np.mean((gt + 0.5 * eq) / n_controls))

    auc = auc_of(np.zeros(len(vals), int))
    perm = np.array([auc_of(rng.integers(0, n_controls + 1, len(vals))) for _ in range(n_perm)])
    res.update(auc=auc, p_value=float((1 + np.sum(perm >= auc - 1e-12)) / (1 + n_perm)),
               mean_control_jump=float(np.mean(controls)))
    return res
