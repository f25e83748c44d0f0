"""Seeds against the simulated grain-boundary current jumps and the electrodes.

Everything here works on plain arrays: a grain map (``0`` vacuum, ``>0`` grain
ids, negative ids other phases), a GB table (dict of arrays with at least
``grain_a, grain_b, jump``; the simulator's gb.csv), electrode masks and seed
positions. Positions are pixels of the microstructure map (x = column, y = row,
pixel centres at integers) unless a :class:`MapTransform` says how the map sits
on the frames.

The question asked (docs/analysis.md, "How it works"): do seeds sit on GBs with a
larger simulated driving force (:data:`DRIVING_FORCE`) than GBs that are just as
close to the negative electrode (electron supply)? :func:`gb_statistics` answers
with the GB as the unit of inference: a GB carrying seeds is one observation;
the comparison is an exact stratified rank test over GBs (strata: connection to
the negative electrode through the GB network, and distance from it), with every
GB of a stratum as a control. Seeds within :data:`INTERFACE_DISTANCE_M` of the
negative electrode are the *interface* class: counted apart, kept out of the test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from insitu.core.errors import UserError

__all__ = ["MapTransform", "parse_map_transform", "gb_point_table", "electrode_distances", "correlate_seeds",
           "roc_auc", "negative_electrode", "DRIVING_FORCE", "INTERFACE_DISTANCE_M", "face_driving_force",
           "gb_hops", "seed_classes", "stratified_rank_test", "gb_population", "gb_statistics", "stats_line", "CONTROLS_FOR", "DOES_NOT_CONTROL"]

#: The GB driving force, one choice shared by the statistics and by the virtual specimen's nucleation
#: rule: ``"local_jump"`` = the current-density jump ``| |j_a| - |j_b| |`` across the GB at each boundary
#: point (A/m², from the simulated current density, averaged over :data:`LOCAL_WINDOW_PX` along the GB),
#: or the name of a numeric gb.csv column (e.g. a blockade indicator), whose magnitude then holds for
#: every point of that GB. The GB-level test uses the GB's maximum of it (never its mean).
DRIVING_FORCE = "local_jump"
#: gb.csv columns whose sign says where ions pile up (> 0) or drain (< 0) at forward bias: their positive
#: part is the driving force (a draining GB drives nothing), not their magnitude
PILE_UP_COLUMNS = ("blockade",)
#: window (map px) over which the local jump is averaged along a GB (about the diameter of a grown seed)
LOCAL_WINDOW_PX = 9.0
#: seeds (and GB points) closer than this to the negative electrode are the interface class (m)
INTERFACE_DISTANCE_M = 150e-9
#: fewest seed-carrying GBs (with controls) for which a p-value is given
MIN_SEEDED_GBS = 3

#: what the GB-level test controls for, and what it does not (the report prints both)
CONTROLS_FOR = (
    "pseudo-replication: a GB carrying several seeds counts once (the GB is the unit of inference)",
    "electron supply: GBs are compared only with GBs equally connected to the negative electrode through "
    "the GB network (touching it, one triple junction away, further) and at a similar distance from it",
    "seeds at the electrode interface: counted apart and kept out of the test",
    "the choice of controls: every GB of a stratum is a control (no random subset; the null draws use a "
    "fixed seed, so the answer is deterministic)",
    "GB length: chance seeds land on long GBs more often, and long GBs have more points to take a maximum "
    "over; the null draws seeded GBs in proportion to their length",
)
DOES_NOT_CONTROL = (
    "the registration of the map on the frames (--map-transform): a wrong placement gives a meaningless answer",
    "the transport model itself: the test checks seeds against the simulated driving force, "
    "not that the simulation is right",
    "other GB properties correlated with the driving force (type, misorientation, Na pile-up)",
    "spatial correlation: neighbouring GBs share a grain and so have similar jumps; seeds clustered on "
    "neighbouring GBs make the test somewhat liberal (6-8 % false positives at 0.05 measured on rotated maps)",
)


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
        from insitu.analysis.transport.microstructure import boundary_pixels
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


def face_driving_force(bpix: dict, gb_table: dict, current_density=None, quantity: str = DRIVING_FORCE,
                       window_px: float = LOCAL_WINDOW_PX) -> np.ndarray:
    """The driving force (:data:`DRIVING_FORCE`) at every boundary point of ``boundary_pixels``.

    Parameters
    ----------
    bpix : boundary points (``boundary_pixels(grains)``: ``x, y, grain_a, grain_b, ya, xa, yb, xb``).
    gb_table : GB table (gb.csv columns); used for a column quantity and to tell which pairs are GBs.
    current_density : (ny, nx, 2) A/m², needed for ``"local_jump"``.
    quantity : ``"local_jump"`` or a numeric gb.csv column name (its magnitude is used).
    window_px : local jumps are averaged over the points of the same GB within this distance (px).

    Returns
    -------
    ndarray (n_points,), ≥ 0; NaN where the point's pair is not in the table.

    Example
    -------
    >>> g = np.array([[1, 1, 2, 2]] * 3)
    >>> j = np.zeros((3, 4, 2)); j[:, :2, 0] = 5.0; j[:, 2:, 0] = 2.0
    >>> bp = __import__("insitu.analysis.transport.microstructure", fromlist=["x"]).boundary_pixels(g)
    >>> face_driving_force(bp, dict(grain_a=[1], grain_b=[2], jump=[0.0]), j).tolist()
    [3.0, 3.0, 3.0]
    """
    pts = gb_point_table(bpix, gb_table)
    row = pts["row"]
    if quantity != "local_jump":
        if quantity not in gb_table:
            raise UserError(f"driving force {quantity!r}: not a column of the GB table "
                            f"(columns: {', '.join(gb_table)})")
        col = np.asarray(gb_table[quantity], float)
        col = np.maximum(col, 0.0) if quantity in PILE_UP_COLUMNS else np.abs(col)
        return np.where(row >= 0, col[np.maximum(row, 0)] if len(col) else np.nan, np.nan)
    if current_density is None:
        raise UserError("driving force 'local_jump' needs the simulated current density")
    jd = np.asarray(current_density, float)
    jabs = np.hypot(jd[..., 0], jd[..., 1])
    local = jabs[bpix["ya"], bpix["xa"]] - jabs[bpix["yb"], bpix["xb"]]
    n = len(local)
    if n == 0:
        return np.zeros(0)
    # mean over the points of the same GB within window_px (a sparse neighbour sum)
    from scipy.sparse import coo_matrix

    tree = cKDTree(np.column_stack([pts["x"], pts["y"]]))
    pairs = tree.query_pairs(window_px, output_type="ndarray")
    same = row[pairs[:, 0]] == row[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    i = np.concatenate([np.arange(n), pairs[same, 0], pairs[same, 1]])
    j = np.concatenate([np.arange(n), pairs[same, 1], pairs[same, 0]])
    w = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    mean = (w @ local) / np.asarray(w.sum(axis=1)).ravel()
    return np.where(row >= 0, np.abs(mean), np.nan)


def gb_hops(bpix: dict, row: np.ndarray, n_rows: int, touching: np.ndarray, junction_px: float = 1.5) -> np.ndarray:
    """Steps through the GB network from the GBs that touch an electrode (0) to every GB.

    Two GBs are neighbours when their boundary points come within ``junction_px`` (a triple junction).

    Parameters
    ----------
    bpix : boundary points; row : GB-table row of each point (−1: none); n_rows : rows in the table.
    touching : (n_rows,) bool, the GBs that touch the electrode.

    Returns
    -------
    int array (n_rows,): 0 touching, 1 one junction away, ...; −1 not reachable.

    Example
    -------
    >>> bp = dict(x=np.array([0., 1., 2.]), y=np.zeros(3))
    >>> gb_hops(bp, np.array([0, 1, 2]), 3, np.array([True, False, False])).tolist()
    [0, 1, 2]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    ok = row >= 0
    xy = np.column_stack([np.asarray(bpix["x"], float)[ok], np.asarray(bpix["y"], float)[ok]])
    r = row[ok]
    pairs = cKDTree(xy).query_pairs(junction_px, output_type="ndarray") if len(xy) else np.zeros((0, 2), int)
    a, b = r[pairs[:, 0]], r[pairs[:, 1]]
    diff = a != b
    # a virtual node n_rows links every touching GB: BFS depth from it - 1 = hops
    src = np.concatenate([a[diff], np.full(int(np.sum(touching)), n_rows)])
    dst = np.concatenate([b[diff], np.flatnonzero(touching)])
    g = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n_rows + 1, n_rows + 1)).tocsr()
    g = g + g.T
    hops = np.full(n_rows, -1)
    order, pred = breadth_first_order(g, n_rows, directed=False, return_predecessors=True)
    depth = np.zeros(n_rows + 1, int)
    for node in order[1:]:
        depth[node] = depth[pred[node]] + 1
    hops[order[1:]] = depth[order[1:]] - 1
    return hops


def seed_classes(dist_negative_px, on_gb, interface_px: float) -> np.ndarray:
    """``"interface"`` (within ``interface_px`` of the negative electrode), ``"gb"`` (else on a GB) or
    ``"off_gb"`` per seed. Distances in the same unit as ``interface_px``.

    Example
    -------
    >>> seed_classes([2.0, 20.0, 30.0], [True, True, False], 7.0).tolist()
    ['interface', 'gb', 'off_gb']
    """
    d = np.asarray(dist_negative_px, float)
    on = np.asarray(on_gb, bool)
    return np.where(d <= interface_px, "interface", np.where(on, "gb", "off_gb")).astype(object).astype(str)


def _midranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v, method="average")


def _rank_sum_distribution(ranks2: np.ndarray, k: int) -> np.ndarray:
    """P(sum of k of the integers ``ranks2`` drawn without replacement = s), s = 0..sum(ranks2)."""
    total = int(ranks2.sum())
    counts = np.zeros((k + 1, total + 1))
    counts[0, 0] = 1.0
    for r in ranks2.astype(int):
        counts[1:, r:] += counts[:-1, :total + 1 - r].copy()
    dist = counts[k]
    return dist / dist.sum()


def _successive_sum_distribution(ranks2: np.ndarray, weights: np.ndarray, k: int,
                                 max_draws: int) -> np.ndarray | None:
    """P(sum of the ``ranks2`` of ``k`` units drawn one at a time without replacement, each with
    probability proportional to its weight among those left = s), s = 0..sum(ranks2).

    Exact, by enumerating the ordered draws; None when there are more than ``max_draws`` of them.

    Example
    -------
    >>> d = _successive_sum_distribution(np.array([1, 2, 3]), np.array([1.0, 1.0, 2.0]), 1, 100)
    >>> d.tolist()                         # one draw: P(unit) = w / sum(w); s runs to sum(ranks2) = 6
    [0.0, 0.25, 0.25, 0.5, 0.0, 0.0, 0.0]
    """
    n = len(ranks2)
    n_ordered = 1
    for j in range(k):
        n_ordered *= n - j
    if n_ordered > max_draws:
        return None
    w = np.asarray(weights, float)
    total_w = w.sum()
    prob = np.ones(1)
    taken_w = np.zeros(1)
    rsum = np.zeros(1, np.int64)
    picked = np.zeros((1, 0), np.int64)
    for _ in range(k):
        step = prob[:, None] * w[None, :] / (total_w - taken_w)[:, None]
        step[np.arange(len(prob))[:, None], picked] = 0.0          # each unit at most once
        rows, cols = np.nonzero(step > 0)
        prob, taken_w = step[rows, cols], taken_w[rows] + w[cols]
        rsum = rsum[rows] + ranks2[cols]
        picked = np.column_stack([picked[rows], cols])
    return np.bincount(rsum, weights=prob, minlength=int(ranks2.sum()) + 1)


def stratified_rank_test(values, seeded, strata, weights=None, n_draws: int = 20000, seed: int = 0,
                         max_exact_draws: int = 2_000_000) -> dict:
    """One-sided stratified rank-sum test: are the seeded units' values larger than the others' within
    their stratum?

    The statistic is the sum over strata of the seeded units' mid-ranks within the stratum. Without
    ``weights`` the null hypothesis is that the seeded labels are exchangeable within each stratum and
    the p-value is exact: the null distribution is the convolution over strata of the distribution of a
    sum of ``k`` of ``n`` mid-ranks. With ``weights`` (e.g. GB lengths: a random seed lands on a GB with
    a probability proportional to its length) the null is that each stratum's ``k`` seeded units are
    drawn without replacement with probability proportional to the weights (successive sampling). Its
    p-value is exact too when every stratum has at most ``max_exact_draws`` ordered draws (``k`` seeded of
    ``n``: n!/(n-k)!, e.g. 3 of 100 is 970 200): the null distribution is enumerated. Otherwise it is
    estimated from ``n_draws`` Gumbel-top-k draws with a fixed random ``seed``, so the answer is still
    deterministic.
    Strata without a seeded unit or without a control carry no information and are left out.

    Parameters
    ----------
    values : (n,) the test quantity per unit.
    seeded : (n,) bool.
    strata : (n,) stratum label per unit.
    weights : (n,) > 0, optional; how likely a unit is to be seeded by chance.
    n_draws, seed : Monte Carlo draws and their random seed (with ``weights``, when not exact).
    max_exact_draws : enumerate at most this many ordered draws per stratum for the exact weighted p.

    Returns
    -------
    dict: ``auc`` (P(seeded > control in the same stratum) + ½ P(tie), over all such pairs), ``p_value``
    (P(statistic ≥ observed) under the null), ``n_seeded``, ``n_controls``, ``n_strata`` (informative
    strata).

    Example
    -------
    >>> r = stratified_rank_test([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 1], [0] * 6)
    >>> r["auc"], round(r["p_value"], 4)          # the two largest of six: 1 / C(6, 2)
    (1.0, 0.0667)
    >>> r = stratified_rank_test([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 1], [0] * 6, weights=[1, 1, 1, 1, 4, 4])
    >>> r["p_value"] > 0.2                         # the two largest are also the likeliest to be hit
    True
    """
    v = np.asarray(values, float)
    s = np.asarray(seeded, bool)
    st = np.asarray(strata)
    w = None if weights is None else np.asarray(weights, float)
    t_obs = 0
    u_sum = pairs = 0.0
    n_seeded = n_controls = n_strata = 0
    per_stratum = []                      # (mid-ranks x 2, k, weights or None)
    for lab in sorted(set(st.tolist()), key=str):
        m = st == lab
        k, n = int(s[m].sum()), int(m.sum())
        if k == 0 or k == n:
            continue
        r2 = np.rint(2 * _midranks(v[m])).astype(int)      # mid-ranks are multiples of 1/2
        t_obs += int(r2[s[m]].sum())
        per_stratum.append((r2, k, None if w is None else w[m]))
        u_sum += r2[s[m]].sum() / 2 - k * (k + 1) / 2
        pairs += k * (n - k)
        n_seeded += k
        n_controls += n - k
        n_strata += 1
    if pairs == 0:
        return dict(auc=float("nan"), p_value=float("nan"), n_seeded=0, n_controls=n_controls, n_strata=0)
    dist = np.ones(1)
    for r2, k, ws in per_stratum:
        d = (_rank_sum_distribution(r2, k) if ws is None
             else _successive_sum_distribution(r2, np.maximum(ws, 1e-300), k, max_exact_draws))
        if d is None:
            break
        dist = np.convolve(dist, d)
    else:
        p = float(min(1.0, dist[t_obs:].sum()))
        return dict(auc=float(u_sum / pairs), p_value=p, n_seeded=n_seeded, n_controls=n_controls,
                    n_strata=n_strata)
    # too many ordered draws to enumerate: Gumbel-top-k, the k largest of log(w) + Gumbel noise
    rng = np.random.default_rng(seed)
    null = np.zeros(n_draws)
    for r2, k, ws in per_stratum:
        keys = np.log(np.maximum(ws, 1e-300))[None, :] + rng.gumbel(size=(n_draws, len(r2)))
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        null += r2[top].sum(axis=1)
    p = float((1 + np.sum(null >= t_obs)) / (1 + n_draws))
    return dict(auc=float(u_sum / pairs), p_value=p, n_seeded=n_seeded, n_controls=n_controls, n_strata=n_strata)


def _distance_strata(d: np.ndarray, per_bin: int = 12, max_bins: int = 3) -> np.ndarray:
    """Quantile bins of ``d`` with about ``per_bin`` members each (at most ``max_bins``)."""
    nb = int(np.clip(len(d) // per_bin, 1, max_bins))
    if nb == 1:
        return np.zeros(len(d), int)
    edges = np.quantile(d, np.linspace(0, 1, nb + 1)[1:-1])
    return np.searchsorted(edges, d, side="right")


def gb_population(bpix: dict, gb_table: dict, electrodes: dict, negative: str, *, current_density=None,
                  scale: float = 1.0, interface_px: float = 7.0, quantity: str = DRIVING_FORCE,
                  touch_px: float = 1.5) -> dict:
    """Every GB of a map as a unit of the GB-level test: its driving force, distance, connection, stratum.

    Parameters
    ----------
    bpix : boundary points of the map; gb_table : GB table; electrodes : name -> mask (map px).
    negative : name of the negative electrode (electron supply).
    current_density : simulated (ny, nx, 2) A/m² (for ``quantity="local_jump"``).
    scale : frame px per map px (the map transform's scale).
    interface_px : the interface zone (frame px from the negative electrode): its GB points do not count.
    quantity : :data:`DRIVING_FORCE` choice.
    touch_px : a GB with a point this close (map px) to the negative electrode touches it.

    Returns
    -------
    dict: per GB ``grain_a, grain_b, force_max`` (NaN: no point outside the interface zone),
    ``length_px`` (its boundary faces outside the interface zone, map px),
    ``distance_px`` (closest approach to the negative electrode, frame px), ``hops`` (triple junctions
    from a GB touching it; −1 not connected), ``stratum`` (−1: not in the test); and what
    :func:`gb_statistics` needs to place seeds (``_points``: per-point row and force, ...).
    """
    nrows = len(np.asarray(gb_table["grain_a"]))
    pts = gb_point_table(bpix, gb_table)
    row = pts["row"]
    force = face_driving_force(bpix, gb_table, current_density, quantity)
    dmap = electrode_distances({negative: electrodes[negative]})[negative]
    d_face = np.minimum(dmap[bpix["ya"], bpix["xa"]], dmap[bpix["yb"], bpix["xb"]])   # map px
    outside = (d_face * scale > interface_px) & (row >= 0)
    fmax = np.full(nrows, -np.inf)
    np.maximum.at(fmax, row[outside], np.nan_to_num(force[outside], nan=-np.inf))
    fmax[~np.isfinite(fmax)] = np.nan
    length = np.bincount(row[outside], minlength=nrows).astype(float) if nrows else np.zeros(0)
    dmin = np.full(nrows, np.inf)
    np.minimum.at(dmin, row[row >= 0], d_face[row >= 0])
    hops = gb_hops(bpix, row, nrows, dmin <= touch_px)
    conn = np.where(hops < 0, 3, np.minimum(hops, 2))       # 0 touch, 1 one junction, 2 further, 3 cut off
    strata = np.full(nrows, -1)
    pop = np.isfinite(fmax) & np.isfinite(dmin)
    for c in range(4):
        m = pop & (conn == c)
        if m.any():
            strata[m] = 10 * c + _distance_strata(dmin[m])
    return dict(grain_a=np.asarray(gb_table["grain_a"], int), grain_b=np.asarray(gb_table["grain_b"], int),
                force_max=fmax, length_px=length, distance_px=dmin * scale, hops=hops, stratum=strata,
                _points=dict(x=pts["x"], y=pts["y"], row=row, force=force), _pairs=_pair_index(gb_table),
                _scale=float(scale), _interface_px=float(interface_px), _negative=negative, _quantity=quantity)


def gb_statistics(table: dict, population: dict) -> tuple[dict, dict, dict]:
    """The GB-level test: do seed-carrying GBs have a larger driving force than comparable GBs?

    Seeds within the interface zone are the interface class; other seeds on a GB make their GB
    (the nearest one) a seed-carrying GB, one observation however many seeds it carries. The test is
    :func:`stratified_rank_test` of the GBs' maximum driving force, seed-carrying GBs against all other
    GBs of the same stratum (:func:`gb_population`), with the null that chance seeds pick the GBs of a
    stratum in proportion to their length (a random seed lands on a long GB more often, and a long GB has
    more points to take a maximum over); 20 000 draws with a fixed seed: a deterministic answer.

    Parameters
    ----------
    table : :func:`correlate_seeds` output (``x_map, y_map, on_gb, grain_a, grain_b, dist_<negative>_px``).
    population : :func:`gb_population` of the same map.

    Returns
    -------
    stats : dict (``auc``, ``p_value`` (None when fewer than :data:`MIN_SEEDED_GBS` GBs carry seeds),
        counts, strata, what the test controls for and does not).
    per_seed : ``seed_class`` (interface / gb / off_gb), ``gb_row`` and ``force_at_seed`` per seed.
    gbs : the population's per-GB columns plus ``n_seeds`` and ``in_test``.

    Example
    -------
    >>> g = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 10, 0), 10, 1)
    >>> bp = __import__("insitu.analysis.transport.microstructure", fromlist=["x"]).boundary_pixels(g)
    >>> pairs = sorted(set(zip(bp["grain_a"].tolist(), bp["grain_b"].tolist())))
    >>> tab = dict(grain_a=[p[0] for p in pairs], grain_b=[p[1] for p in pairs], jump=np.arange(len(pairs)))
    >>> top = np.zeros(g.shape, bool); top[0] = True
    >>> pop = gb_population(bp, tab, dict(top=top), "top", quantity="jump", interface_px=3)
    >>> st, per_seed, gbs = gb_statistics(dict(x_map=[], y_map=[], on_gb=[], grain_a=[], grain_b=[],
    ...                                        dist_top_px=[]), pop)
    >>> st["gbs_total"], st["p_value"] is None
    (24, True)
    """
    pop = population
    negative, scale, interface_px = pop["_negative"], pop["_scale"], pop["_interface_px"]
    fmax, strata = pop["force_max"], pop["stratum"]
    nrows = len(fmax)
    n = len(table["x_map"])
    cls = seed_classes(np.asarray(table[f"dist_{negative}_px"], float) * scale, table["on_gb"], interface_px)
    idx = pop["_pairs"]
    seed_row = np.array([idx.get((min(int(a), int(b)), max(int(a), int(b))), -1)
                         for a, b in zip(table["grain_a"], table["grain_b"])], int).reshape(-1)
    seed_row = np.where(cls == "gb", seed_row, -1)
    force_at_seed = np.full(n, np.nan)
    fp = pop["_points"]
    if n and len(fp["x"]):
        _, near = cKDTree(np.column_stack([fp["x"], fp["y"]])).query(np.column_stack([table["x_map"],
                                                                                      table["y_map"]]))
        force_at_seed = np.where(cls == "gb", fp["force"][near], np.nan)
    n_seeds = np.bincount(seed_row[seed_row >= 0], minlength=nrows) if nrows else np.zeros(0, int)
    seeded = n_seeds > 0
    ok = strata >= 0
    res = stratified_rank_test(fmax[ok], seeded[ok], strata[ok], weights=pop["length_px"][ok])
    in_test = np.zeros(nrows, bool)
    for lab in set(strata[ok & seeded].tolist()):
        m = ok & (strata == lab)
        if 0 < seeded[m].sum() < m.sum():
            in_test |= m
    quantity = pop["_quantity"]
    what = ("GB maximum of the local current-density jump | |j_a| - |j_b| | (A/m^2, averaged over "
            f"{LOCAL_WINDOW_PX:g} px along the GB), outside the interface zone" if quantity == "local_jump"
            else f"GB |{quantity}| (gb.csv column)")
    p = res["p_value"] if res["n_seeded"] >= MIN_SEEDED_GBS else None
    stats = dict(
        unit="GB", test="stratified rank-sum test over GBs (one-sided: seed-carrying GBs larger); null: the "
                        "seeded GBs of each stratum drawn in proportion to GB length (20000 draws, fixed seed)",
        quantity=what, driving_force=quantity, negative_electrode=negative,
        auc=res["auc"], p_value=p,
        p_value_note=None if p is not None else
        f"no p-value: {res['n_seeded']} seed-carrying GB(s) with controls, fewer than {MIN_SEEDED_GBS}",
        seeds_total=int(n), interface_seeds=int(np.sum(cls == "interface")), seeds_on_gb=int(np.sum(cls == "gb")),
        off_gb_seeds=int(np.sum(cls == "off_gb")), gbs_with_seeds=int(seeded.sum()),
        gbs_in_test=res["n_seeded"], control_gbs=res["n_controls"], strata=res["n_strata"], gbs_total=int(nrows),
        interface_distance_px=float(interface_px),
        strata_rule="connection to the negative electrode through the GB network (touching / one triple "
                    "junction away / further / not connected) x distance-from-it quantile bins (~12 GBs each)",
        controls_for=list(CONTROLS_FOR), does_not_control=list(DOES_NOT_CONTROL))
    gbs = {k: v for k, v in pop.items() if not k.startswith("_")}
    gbs.update(n_seeds=n_seeds, in_test=in_test)
    return stats, dict(seed_class=cls, gb_row=seed_row, force_at_seed=force_at_seed), gbs


def stats_line(stats: dict) -> str:
    """One line for a terminal: the GB-level result and the seed classes.

    Example
    -------
    >>> stats_line(dict(auc=0.9, p_value=0.01, gbs_in_test=4, control_gbs=20, seeds_on_gb=6,
    ...                 interface_seeds=3, off_gb_seeds=1))
    'GB-level test: AUC 0.90, p = 0.01 (4 seed-carrying GBs vs 20 matched GBs; seeds: 6 on GBs, 3 interface, 1 off GBs)'
    """
    p = stats.get("p_value")
    auc = stats.get("auc")
    ptxt = f"p = {p:.3g}" if p is not None else "no p (too few seed-carrying GBs)"
    auc_txt = f"AUC {auc:.2f}" if auc is not None and np.isfinite(auc) else "AUC n/a"
    return (f"GB-level test: {auc_txt}, {ptxt} ({stats.get('gbs_in_test', 0)} seed-carrying GBs vs "
            f"{stats.get('control_gbs', 0)} matched GBs; seeds: {stats.get('seeds_on_gb', 0)} on GBs, "
            f"{stats.get('interface_seeds', 0)} interface, {stats.get('off_gb_seeds', 0)} off GBs)")
