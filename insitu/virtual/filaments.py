"""Na filament seeds on the virtual specimen: where they nucleate, how they grow.

The model is deliberately simple and fully parameterised (:class:`FilamentParams`);
it encodes the story of Ding et al. 2023 (docs/virtual-specimen.md), not a first-principles theory:

* **Candidate sites** are fixed at start-up, spaced ``spacing_px`` apart:
  grain pixels just below the Au(Pt) electrode (the *interface*) and grain-boundary
  pixels (*GB* sites). Nothing else nucleates.
* **Driving force** (ionic): at an interface site the local current density |j| from the
  transport simulator, normalised to the strongest interface site; at a GB site the
  local GB driving force (``insitu.analysis.correlate.DRIVING_FORCE``: the local
  current-density jump across the GB at the site, or a gb.csv column such as a
  blockade indicator), divided by the ``gb_drive_quantile`` quantile of the GB sites'
  forces and capped at 1 (the strongest tenth of the GB sites count alike). The
  simulation is run at 1 V, so at a bias ``V`` the force is ``drive * V``.
* **Threshold**: a site can nucleate only while ``drive * V`` exceeds its kind's
  threshold, written as the bias at which the strongest site reaches it
  (``interface_onset_V``, ``gb_onset_V``); the rate grows with the overdrive
  ``drive * V / onset - 1``. A bias well below ``gb_onset_V`` gives no GB seeds at all.
* **Electron supply**: Na+ needs electrons to become Na. They come only from the
  Au(Pt) electrode and through grown filaments connected to it (the *electron path*).
  Interface sites touch the electrode (supply 1). A GB site's supply is
  ``exp(-d / supply_length_px)`` with ``d`` the geodesic distance along the GB network
  from the electron path (pixels covered by a filament cost nothing), and **zero** beyond
  ``electron_reach_px``: far GBs with large jumps do not nucleate (the paper). A seed
  nucleates only within reach of the path, so every seed is connected to the Au(Pt)
  through the GB it drew its electrons along, and itself extends the path: a filament on
  a GB that ends at the electrode brings electrons to the neighbouring boundaries (P4
  first, then P5/P6 of the paper).
* **Nucleation** is a Poisson process in the forward charge ``Q`` (C) that has passed
  through the specimen: a site's hazard per coulomb is
  ``k * overdrive * supply / charge_scale_C`` with ``k_interface`` or ``k_gb``. Interface seeds come first because the
  interface is where the electrons are (supply 1 and a low threshold), not because of
  an incubation constant.
* **Growth** with charge: a seed's radius goes from ``r0_px`` to ``r_max_px`` as
  ``1 - exp(-q / q_grow)``, ``q`` accumulating ``max(drive, growth_floor) * dQ``.
  **Reverse bias** (Na stripping) removes ``strip_efficiency * |dQ|`` from ``q``,
  at most down to ``strip_floor`` of the largest ``q`` reached, so seeds shrink but
  stay where they were (they grow again in the next extraction).
* **The electron beam has no effect**: nothing here depends on the beam.

Positive bias (on the Cu grid / Na source) drives Na+ to the Au(Pt) electrode:
plating; negative bias strips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FilamentParams:
    """Knobs of the filament model (defaults reproduce the paper's story in the demo).

    Charges are in coulomb of *forward* charge through the whole specimen.
    """

    spacing_px: float = 14.0          #: minimum distance between candidate sites (and so between seeds)
    edge_margin_px: float = 8.0       #: no sites this close to vacuum, ZrO2, backbone or the Na source
    right_margin_px: float = 24.0     #: no interface sites this close to the Na-source electrode
    interface_depth_px: float = 4.0   #: interface sites sit this far below the Au(Pt) edge
    gb_min_depth_px: float = 10.0     #: GB sites sit at least this far from the Au(Pt) (beyond the interface class)
    junction_margin_px: float = 4.0   #: no GB sites this close to another GB (a triple junction: ambiguous GB)
    charge_scale_C: float = 1.5e-4    #: the charge over which nucleation and growth happen
    k_interface: float = 1.0          #: nucleations per site per charge_scale at unit overdrive (interface)
    k_gb: float = 20.0                #: the same for GB sites at full electron supply (10 before the thin-film tensor)
    interface_onset_V: float = 1.0    #: bias (V) at which the strongest interface sites reach their threshold (3 before)
    gb_onset_V: float = 6.0           #: bias (V) at which the strongest GB sites reach their threshold
    gb_drive_quantile: float = 0.9    #: GB drive = force / this quantile of the GB sites' forces, capped at 1
    interface_drive_quantile: float = 0.9  #: interface drive = |j| / this quantile of the interface sites' |j|, capped at 1
    reference_V: float = 17.0         #: bias assumed when :meth:`FilamentModel.advance` is given none
    supply_length_px: float = 20.0    #: decay length of electron supply along the GB network (0.4 µm; 12 before)
    electron_reach_px: float = 40.0   #: no electron supply farther than this from the electron path (0.8 µm)
    r0_px: float = 2.0                #: radius of a new seed
    r_max_px: float = 4.5             #: radius a seed grows towards
    q_grow: float = 0.6               #: growth charge (in charge_scale) for 63 % of the radius gain
    growth_floor: float = 0.5         #: minimum drive used for growth (every seed grows)
    strip_efficiency: float = 4.0     #: seed growth charge removed per coulomb of reverse charge
    strip_floor: float = 0.65         #: seeds keep at least this fraction of their peak charge
    conductance_gain: float = 0.06    #: relative conductance gain per fully grown seed
    max_events_per_step: int = 50


@dataclass
class Seed:
    """One filament seed (specimen pixel coordinates; pixel centres at integers)."""

    id: int
    x: float
    y: float
    kind: str            # "interface" | "gb"
    grains: tuple        # (grain_a, grain_b) for GB seeds, (grain,) at the interface
    t_nucleation_s: float
    q_nucleation_C: float  # forward charge passed when it nucleated
    drive: float
    path_distance_px: float = 0.0  # geodesic distance (px) from the electron path when it nucleated
    q: float = 0.0       # growth charge (C, drive-weighted)
    q_peak: float = 0.0
    first_frame: int = -1  # index of the first delivered frame that showed it
    first_seen_s: float = float("nan")  # time of that frame

    def radius_px(self, p: FilamentParams) -> float:
        """Radius in px from the growth charge."""
        g = 1.0 - math.exp(-self.q / (p.q_grow * p.charge_scale_C))
        return p.r0_px + (p.r_max_px - p.r0_px) * g


@dataclass
class Sites:
    """Candidate nucleation sites (fixed at start-up)."""

    x: np.ndarray           # px
    y: np.ndarray           # px
    kind: np.ndarray        # 0 interface, 1 GB
    grains: list            # tuple per site
    drive: np.ndarray       # 0..1
    available: np.ndarray = field(default=None)  # bool

    def __post_init__(self):
        if self.available is None:
            self.available = np.ones(self.x.size, bool)


def spaced_points(mask: np.ndarray, spacing_px: float, priority: np.ndarray | None = None,
                  taken: list[tuple[float, float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy choice of pixels of ``mask`` at least ``spacing_px`` apart.

    Pixels are visited in descending ``priority`` (raster order if None); ``taken``
    are points already chosen that new points must also avoid.

    Parameters
    ----------
    mask : (ny, nx) bool
    spacing_px : float
    priority : (ny, nx) float, optional
    taken : list of (y, x), optional

    Returns
    -------
    y, x : int arrays

    Examples
    --------
    >>> m = np.zeros((1, 10), bool); m[0, :] = True
    >>> spaced_points(m, 3.0)[1].tolist()
    [0, 3, 6, 9]
    """
    ys, xs = np.nonzero(mask)
    if priority is not None:
        order = np.argsort(-priority[ys, xs], kind="stable")
        ys, xs = ys[order], xs[order]
    chosen_y: list[int] = []
    chosen_x: list[int] = []
    pts = np.array(taken, float).reshape(-1, 2) if taken else np.zeros((0, 2))
    s2 = spacing_px ** 2
    cell = max(spacing_px, 1.0)
    grid: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for py, px in pts:
        grid.setdefault((int(py // cell), int(px // cell)), []).append((py, px))
    for y, x in zip(ys.tolist(), xs.tolist()):
        gy, gx = int(y // cell), int(x // cell)
        ok = True
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for qy, qx in grid.get((gy + dy, gx + dx), ()):
                    if (qy - y) ** 2 + (qx - x) ** 2 < s2:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if ok:
            chosen_y.append(y)
            chosen_x.append(x)
            grid.setdefault((gy, gx), []).append((y, x))
    return np.array(chosen_y, int), np.array(chosen_x, int)


def geodesic_distance(passable: np.ndarray, free: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Shortest 8-connected path length (px) from ``sources`` through ``passable`` pixels.

    Pixels in ``free`` cost nothing to cross (a filament conducts electrons);
    other passable pixels cost their step length; impassable pixels are ``inf``.

    Examples
    --------
    >>> p = np.ones((1, 5), bool); s = np.zeros((1, 5), bool); s[0, 0] = True
    >>> np.round(geodesic_distance(p, np.zeros_like(p), s)[0], 3).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    from skimage.graph import MCP_Geometric

    cost = np.where(passable | free | sources, 1.0, np.inf)
    cost[free | sources] = 1e-6
    mcp = MCP_Geometric(cost, fully_connected=True)
    starts = list(zip(*np.nonzero(sources)))
    if not starts:
        return np.full(passable.shape, np.inf)
    dist, _ = mcp.find_costs(starts)
    dist = np.asarray(dist, float)
    dist[~np.isfinite(cost)] = np.inf
    # MCP_Geometric charges each step the mean cost of its two ends: leaving a free pixel
    # costs half a step, so add the missing half back on ordinary pixels
    dist = np.where(free | sources, dist, dist + 0.5)
    return np.maximum(dist, 0.0)


class FilamentModel:
    """State of all seeds on one specimen; advanced in forward/reverse charge.

    Parameters
    ----------
    sites : Sites
    gb_mask : (ny, nx) bool
        Grain-boundary pixels (the network electrons travel along).
    electrode_mask : (ny, nx) bool
        The negative electrode (Au(Pt)), where electrons come from.
    params : FilamentParams
    rng : numpy Generator
    """

    def __init__(self, sites: Sites, gb_mask: np.ndarray, electrode_mask: np.ndarray,
                 params: FilamentParams, rng: np.random.Generator):
        self.sites = sites
        self.p = params
        self.rng = rng
        self.gb_mask = gb_mask
        self.electrode = electrode_mask
        self.seeds: list[Seed] = []
        self.q_forward = 0.0     # C, total forward charge so far
        self.q_reverse = 0.0     # C
        self._supply = None
        self._path_d = np.zeros(sites.x.size)
        self._update_supply()

    # -- electron supply ----------------------------------------------------
    def _filament_mask(self) -> np.ndarray:
        m = np.zeros(self.gb_mask.shape, bool)
        ny, nx = m.shape
        for s in self.seeds:
            r = s.radius_px(self.p) + 1.0
            y0, y1 = max(0, int(s.y - r)), min(ny, int(s.y + r) + 2)
            x0, x1 = max(0, int(s.x - r)), min(nx, int(s.x + r) + 2)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            m[y0:y1, x0:x1] |= (yy - s.y) ** 2 + (xx - s.x) ** 2 <= r * r
        return m

    def _update_supply(self) -> None:
        s = self.sites
        supply = np.ones(s.x.size)
        path_d = np.zeros(s.x.size)
        gb = s.kind == 1
        if gb.any():
            d = geodesic_distance(self.gb_mask, self._filament_mask(), self.electrode)
            dd = d[s.y[gb].astype(int), s.x[gb].astype(int)]
            dd = np.where(np.isfinite(dd), dd, np.inf)
            path_d[gb] = dd
            supply[gb] = np.where(dd <= self.p.electron_reach_px, np.exp(-np.minimum(dd, 1e9) /
                                                                         self.p.supply_length_px), 0.0)
        self._supply = supply
        self._path_d = path_d

    def supply(self) -> np.ndarray:
        """Electron supply (0..1) per candidate site at the current state."""
        return self._supply.copy()

    def overdrive(self, voltage_V: float) -> np.ndarray:
        """``max(0, drive * V / onset - 1)`` per site at bias ``voltage_V`` (forward bias only)."""
        s, p = self.sites, self.p
        onset = np.where(s.kind == 0, p.interface_onset_V, p.gb_onset_V)
        return np.maximum(0.0, s.drive * max(float(voltage_V), 0.0) / onset - 1.0)

    def hazard_per_C(self, voltage_V: float | None = None) -> np.ndarray:
        """Nucleation hazard per coulomb of forward charge at bias ``voltage_V``, per site (0 where unavailable)."""
        s, p = self.sites, self.p
        v = p.reference_V if voltage_V is None else voltage_V
        k = np.where(s.kind == 0, p.k_interface, p.k_gb)
        h = k * self.overdrive(v) * self._supply / p.charge_scale_C
        return np.where(s.available, h, 0.0)

    # -- evolution --------------------------------------------------------------
    def advance(self, dq_C: float, t_s: float, voltage_V: float | None = None) -> list[Seed]:
        """Pass charge ``dq_C`` (C; > 0 forward = plating, < 0 reverse = stripping) at time ``t_s``
        under bias ``voltage_V`` (V; default ``reference_V``).

        Returns the seeds nucleated in this step.
        """
        p = self.p
        new: list[Seed] = []
        if dq_C > 0:
            remaining = dq_C
            # split so that nucleation updates the supply of the neighbours in between
            n_sub = 0
            while remaining > 0 and n_sub < p.max_events_per_step:
                n_sub += 1
                h = self.hazard_per_C(voltage_V)
                total = float(h.sum())
                if total <= 0:
                    self._grow(remaining)
                    self.q_forward += remaining
                    break
                wait = float(self.rng.exponential(1.0 / total))
                if wait >= remaining:
                    self._grow(remaining)
                    self.q_forward += remaining
                    break
                self._grow(wait)
                self.q_forward += wait
                remaining -= wait
                i = int(self.rng.choice(h.size, p=h / total))
                new.append(self._nucleate(i, t_s))
        elif dq_C < 0:
            self.q_reverse += -dq_C
            for sd in self.seeds:
                sd.q = max(sd.q - p.strip_efficiency * (-dq_C), p.strip_floor * sd.q_peak)
        return new

    def _grow(self, dq: float) -> None:
        p = self.p
        for sd in self.seeds:
            sd.q += max(sd.drive, p.growth_floor) * dq
            sd.q_peak = max(sd.q_peak, sd.q)

    def _nucleate(self, i: int, t_s: float) -> Seed:
        s = self.sites
        sd = Seed(id=len(self.seeds), x=float(s.x[i]), y=float(s.y[i]),
                  kind="interface" if s.kind[i] == 0 else "gb", grains=tuple(s.grains[i]),
                  t_nucleation_s=float(t_s), q_nucleation_C=self.q_forward, drive=float(s.drive[i]),
                  path_distance_px=float(self._path_d[i]))
        self.seeds.append(sd)
        # this site and any site closer than spacing are used up
        d2 = (s.x - s.x[i]) ** 2 + (s.y - s.y[i]) ** 2
        s.available &= d2 >= self.p.spacing_px ** 2
        self._update_supply()
        return sd

    # -- observables ---------------------------------------------------------------
    def radii_px(self) -> np.ndarray:
        return np.array([sd.radius_px(self.p) for sd in self.seeds])

    def conductance_factor(self) -> float:
        """Network conductance relative to the pristine specimen (≥ 1, grows with filaments)."""
        p = self.p
        if not self.seeds:
            return 1.0
        g = ((self.radii_px() - 0) / p.r_max_px) ** 2
        return 1.0 + p.conductance_gain * float(g.sum())

    def bridges(self, dist_top: np.ndarray, dist_right: np.ndarray) -> bool:
        """True when a cluster of touching seeds connects the two electrodes.

        ``dist_top``/``dist_right``: distance maps (px) to each electrode.
        """
        n = len(self.seeds)
        if n == 0:
            return False
        r = self.radii_px()
        xs = np.array([sd.x for sd in self.seeds])
        ys = np.array([sd.y for sd in self.seeds])
        parent = list(range(n))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for a in range(n):
            for b in range(a + 1, n):
                if (xs[a] - xs[b]) ** 2 + (ys[a] - ys[b]) ** 2 <= (r[a] + r[b]) ** 2:
                    parent[find(a)] = find(b)
        iy, ix = ys.astype(int), xs.astype(int)
        top = dist_top[iy, ix] <= r + 1.0
        right = dist_right[iy, ix] <= r + 1.0
        roots_top = {find(a) for a in range(n) if top[a]}
        return any(find(a) in roots_top for a in range(n) if right[a])
