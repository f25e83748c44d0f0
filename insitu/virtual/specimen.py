"""The virtual specimen: a Na-β''-alumina lamella with known ground truth.

One :class:`VirtualSpecimen` holds

* the microstructure (``insitu.analysis.transport.lamella.voronoi_lamella``: ~20 Voronoi
  grains with random 3D orientations, ZrO2 particles, backbone, Au(Pt) electrode
  along the top, Na source along the right, vacuum beyond), seeded;
* one transport simulation of it (``insitu.analysis.transport.simulator.simulate``, run once
  at start-up, Au(Pt) at 0 V and the Na source at 1 V): the network conductance
  (× ``conductance_scale``: the paper's sub-µA currents) and the current density /
  GB jumps that drive the filament model;
* the filament state (:mod:`insitu.virtual.filaments`), advanced by the charge
  that the applied bias drives through the specimen and by that bias (nucleation
  needs the local driving force, scaled by the bias, above a threshold, and electrons
  from the Au(Pt) or a filament connected to it); never by the beam;
* the ground truth (which seed appeared in which delivered frame), written into
  the session by :meth:`VirtualSpecimen.write_truth`.

Coordinates: specimen pixels = pixels of the microstructure grid = pixels of the
frames; the frames show the specimen shifted by the drift *relative to the first
delivered frame*, so truth positions are in first-frame pixel coordinates
(pixel centres at integers) as in ``seeds.csv``.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from insitu.virtual.filaments import FilamentModel, FilamentParams, Sites, spaced_points
from insitu.virtual.haadf import Drift, HaadfParams, brightness, render, static_image

#: phase codes of the rendering map
VACUUM, GRAIN, ZRO2, BACKBONE, ELECTRODE, SOURCE = 0, 1, 2, 3, 4, 5

#: electrode names in the microstructure: negative (Au(Pt), top) and positive (Na source, right)
NEGATIVE, POSITIVE = "top", "right"


@dataclass
class SpecimenParams:
    """Everything that defines a virtual specimen besides its seed."""

    shape: tuple = (256, 256)            #: grid = frame size (px)
    n_grains: int = 20
    n_zro2: int = 4
    #: real-lamella conductance / simulated conductance (the simulator uses sigma_ip = 1 S/m; 0.9
    #: gives the paper's sub-µA currents with the thin-film tensor: ≈ 120-240 nA at +17 V on a
    #: pristine specimen; it was 0.5 with the in-plane block, which conducts 1.3-2.2x more)
    conductance_scale: float = 0.9
    noise_rel: float = 0.01              #: relative current noise (std)
    noise_floor_A: float = 2e-10         #: absolute current noise (std)
    short_resistance_ohm: float = 1e3    #: load once a filament bridges the electrodes
    filaments: FilamentParams = field(default_factory=FilamentParams)
    haadf: HaadfParams = field(default_factory=HaadfParams)
    step_s: float = 5.0                  #: the filament model is updated on this fixed time grid (experiment s)


@dataclass
class Scene:
    """Rendering/physics maps derived from the microstructure."""

    phase: np.ndarray          # (ny, nx) uint8 phase codes
    grains: np.ndarray         # (ny, nx) int, grain label > 0 inside grains, else 0
    gb_mask: np.ndarray        # (ny, nx) bool, grain-boundary pixels (both sides)
    negative: np.ndarray       # (ny, nx) bool, Au(Pt)
    positive: np.ndarray       # (ny, nx) bool, Na source
    grain_level: dict          # label -> orientation contrast in [-1, 1]
    pixel_size_m: float


def _scene_from_microstructure(m) -> Scene:
    """Phase maps from a :class:`insitu.analysis.transport.microstructure.Microstructure`."""
    from insitu.analysis.transport import microstructure as ms

    labels = np.asarray(m.grains)
    neg = np.asarray(m.electrodes[NEGATIVE], bool)
    pos = np.asarray(m.electrodes[POSITIVE], bool)
    phase = np.full(labels.shape, VACUUM, np.uint8)
    phase[labels > 0] = GRAIN
    phase[labels == ms.ZRO2] = ZRO2
    phase[labels == ms.BACKBONE] = BACKBONE
    phase[neg] = ELECTRODE
    phase[pos] = SOURCE
    grain_lab = np.where(labels > 0, labels, 0).astype(np.int32)
    # orientation (channelling) contrast: strongest when c is along the beam (z)
    level = {int(g): float(np.clip(2.0 * abs(c[2]) - 1.0, -1, 1)) for g, c in zip(m.grain_ids, m.c_axis)}
    b = ms.boundary_pixels(labels)
    gb = np.zeros(labels.shape, bool)
    gb[b["ya"], b["xa"]] = True
    gb[b["yb"], b["xb"]] = True
    return Scene(phase, grain_lab, gb, neg, pos, level, float(m.voxel_size_m))


def make_lamella(seed: int, shape=(256, 256), n_grains: int = 20, n_zro2: int = 4, vacuum_px: int = 10,
                 electrode_px: int = 4):
    """The virtual specimen's microstructure: ``voronoi_lamella`` with vacuum beyond it.

    The lamella fills ``shape`` minus ``vacuum_px`` rows above the Au(Pt) coating and
    ``vacuum_px`` columns left of the backbone (vacuum, dark in HAADF).

    Example
    -------
    >>> m = make_lamella(0, (128, 128))
    >>> m.shape, int(m.grains[0, 0])
    ((128, 128), 0)
    """
    from insitu.analysis.transport.lamella import voronoi_lamella
    from insitu.analysis.transport.microstructure import Microstructure, VACUUM as VAC

    ny, nx = shape
    m = voronoi_lamella((ny - vacuum_px, nx - vacuum_px), n_grains=n_grains, seed=seed, zro2=n_zro2,
                        electrode_width=electrode_px, voxel_size_m=5e-6 / (nx - vacuum_px))
    pad = ((vacuum_px, 0), (vacuum_px, 0))
    return Microstructure(grains=np.pad(m.grains, pad, constant_values=VAC), grain_ids=m.grain_ids,
                          c_axis=m.c_axis, electrodes={k: np.pad(v, pad) for k, v in m.electrodes.items()},
                          voxel_size_m=m.voxel_size_m, thickness_m=m.thickness_m, sigma_ip=m.sigma_ip,
                          anisotropy=m.anisotropy, gb_ratio=m.gb_ratio, gb_thickness_m=m.gb_thickness_m,
                          backbone_ratio=m.backbone_ratio, euler_bunge=m.euler_bunge).validate("virtual lamella")


class VirtualSpecimen:
    """A seeded virtual lamella whose state evolves with the charge the bias drives.

    Parameters
    ----------
    seed : int
        Everything random (microstructure, nucleation, noise) follows from it.
    params : SpecimenParams, optional
    microstructure : Microstructure, optional
        Use this lamella instead of generating one.
    simulation : SimulationResult, optional
        Use this transport result instead of running the simulator.

    Examples
    --------
    >>> sp = VirtualSpecimen(seed=1)                       # doctest: +SKIP
    >>> sp.set_drive(0.0, 17.0); sp.advance(600.0)         # doctest: +SKIP
    >>> len(sp.model.seeds) > 0                            # doctest: +SKIP
    True
    """

    def __init__(self, seed: int = 0, params: SpecimenParams | None = None, *, microstructure=None,
                 simulation=None):
        self.seed = int(seed)
        self.params = params or SpecimenParams()
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(self.seed)
        self._noise_rng = np.random.default_rng(self.seed + 1)
        self._frame_rng = np.random.default_rng(self.seed + 2)
        self.microstructure = microstructure if microstructure is not None else self._make_microstructure()
        self.scene = _scene_from_microstructure(self.microstructure)
        self.simulation = simulation if simulation is not None else self._simulate()
        self._setup_transport()
        self._setup_filaments()
        hp = self.params.haadf
        self.base = static_image(self.scene.phase, self.scene.grains, self.scene.grain_level,
                                 self.scene.gb_mask, hp)
        self.drift = Drift(hp, self.seed)
        self._drift0: np.ndarray | None = None
        # drive state
        self.t = 0.0
        self.v_applied = 0.0
        self.limit_A = math.inf
        self.shorted = False
        self.charge_C = 0.0          # net charge through the specimen (C)
        self._pending_C = 0.0        # charge since the last grid update of the filament model
        self._pending_CV = 0.0       # its integral of charge x bias (C V): the step's charge-weighted bias
        self.frames_delivered = 0
        self.frame_times: list[float] = []

    # -- construction ---------------------------------------------------------------
    def _make_microstructure(self):
        p = self.params
        return make_lamella(self.seed, p.shape, p.n_grains, p.n_zro2)

    def _simulate(self):
        from insitu.analysis.transport.simulator import simulate

        return simulate(self.microstructure, {NEGATIVE: 0.0, POSITIVE: 1.0})

    def _setup_transport(self) -> None:
        sim = self.simulation
        g = getattr(sim, "conductance_S", None)
        if isinstance(g, dict):
            g = next(iter(g.values()), None)
        if g is None or not np.isfinite(g) or g <= 0:
            cur = getattr(sim, "electrode_current", {}) or {}
            g = abs(float(cur.get(POSITIVE, cur.get(NEGATIVE, 0.0)))) or 1.0
        self.sim_conductance_S = float(g)
        #: pristine conductance (S) between the Au(Pt) and the Na source
        self.g0_S = self.params.conductance_scale * self.sim_conductance_S
        jd = np.asarray(sim.current_density, float)
        self.jmag = np.hypot(jd[..., 0], jd[..., 1])

    def _gb_force_map(self):
        """The GB driving force (``correlate.DRIVING_FORCE``, at 1 V) on each GB pixel (both sides of a
        boundary face; the larger where faces share a pixel), and the grain pair of each GB pixel."""
        from insitu.analysis.correlate import DRIVING_FORCE, face_driving_force
        from insitu.analysis.transport.microstructure import boundary_pixels

        lab = self.scene.grains
        b = boundary_pixels(lab)
        force = np.nan_to_num(face_driving_force(b, self.simulation.gb_table, self.simulation.current_density,
                                                 DRIVING_FORCE), nan=0.0)
        force_px = np.zeros(lab.shape)
        pair_a = np.zeros(lab.shape, np.int32)
        pair_b = np.zeros(lab.shape, np.int32)
        for yk, xk in (("ya", "xa"), ("yb", "xb")):
            np.maximum.at(force_px, (b[yk], b[xk]), force)
            pair_a[b[yk], b[xk]] = b["grain_a"]
            pair_b[b[yk], b[xk]] = b["grain_b"]
        return force_px, pair_a, pair_b

    def _near_junction(self, margin_px: float) -> np.ndarray:
        """GB pixels within ``margin_px`` of a boundary face of another grain pair (a triple junction):
        a seed there could belong to either GB, so none is placed there."""
        from scipy.spatial import cKDTree

        from insitu.analysis.transport.microstructure import boundary_pixels

        b = boundary_pixels(self.scene.grains)
        out = np.zeros(self.scene.grains.shape, bool)
        if not len(b["x"]):
            return out
        pair = b["grain_a"].astype(np.int64) * 100000 + b["grain_b"]
        tree = cKDTree(np.column_stack([b["x"], b["y"]]))
        for yk, xk in (("ya", "xa"), ("yb", "xb")):
            near = tree.query_ball_point(np.column_stack([b[xk], b[yk]]), margin_px)
            mixed = np.array([np.any(pair[n] != pair[i]) for i, n in enumerate(near)], bool)
            out[b[yk][mixed], b[xk][mixed]] = True
        return out

    def _setup_filaments(self) -> None:
        sc, fp = self.scene, self.params.filaments
        ny, nx = sc.phase.shape
        grain = sc.phase == GRAIN
        # keep sites away from vacuum, ZrO2, backbone and the Na source
        bad = ~(grain | sc.negative)
        d_bad = ndimage.distance_transform_edt(~bad)
        self.dist_top = ndimage.distance_transform_edt(~sc.negative)
        self.dist_right = ndimage.distance_transform_edt(~sc.positive)
        # interface: grain pixels just below the Au(Pt) (the seed disc then sits mostly on the grain)
        iface = grain & (self.dist_top >= fp.interface_depth_px) & (self.dist_top < fp.interface_depth_px + 1)
        iface &= self.dist_right > fp.right_margin_px
        solid = np.isin(sc.phase, (ZRO2, BACKBONE, SOURCE))   # the vacuum above the coating does not count
        iface &= ndimage.distance_transform_edt(~solid) > fp.edge_margin_px
        jm = self.jmag
        iy, ix = spaced_points(iface, fp.spacing_px, priority=jm * grain)
        # GB sites: boundary pixels away from edges, beyond the interface class below the electrode
        gbm = sc.gb_mask & (d_bad > fp.edge_margin_px) & (self.dist_top >= fp.gb_min_depth_px)
        gbm &= self.dist_right > fp.right_margin_px
        force_px, pair_a, pair_b = self._gb_force_map()
        gbm &= (force_px > 0) & ~self._near_junction(fp.junction_margin_px)
        gy, gx = spaced_points(gbm, fp.spacing_px, priority=force_px,
                               taken=list(zip(iy.tolist(), ix.tolist())))
        lab = sc.grains
        j_if = jm[iy, ix]
        # both kinds normalised the same way: by a quantile of their sites' force, capped at 1 (the
        # thin-film tensor spreads the interface |j| over two decades, so its maximum is one outlier grain)
        d_if = np.minimum(j_if / (float(np.quantile(j_if, fp.interface_drive_quantile)) or 1.0), 1.0) \
            if j_if.size else j_if
        f_gb = force_px[gy, gx]
        # normalised to the strongest GB sites (the quantile gb_drive_quantile), which all count alike
        scale = float(np.quantile(f_gb, fp.gb_drive_quantile)) if f_gb.size else 1.0
        d_gb = np.minimum(f_gb / (scale or 1.0), 1.0)
        sites = Sites(
            x=np.concatenate([ix, gx]).astype(float), y=np.concatenate([iy, gy]).astype(float),
            kind=np.concatenate([np.zeros(ix.size, int), np.ones(gx.size, int)]),
            grains=[(int(lab[y, x]),) for y, x in zip(iy, ix)] +
                   [(int(pair_a[y, x]), int(pair_b[y, x])) for y, x in zip(gy, gx)],
            drive=np.concatenate([d_if, d_gb]))
        self.model = FilamentModel(sites, sc.gb_mask, sc.negative, fp, self._rng)

    # -- physics in time ---------------------------------------------------------------
    def conductance_S(self) -> float:
        """Present network conductance between the electrodes (S)."""
        if self.shorted:
            return 1.0 / self.params.short_resistance_ohm
        return self.g0_S * self.model.conductance_factor()

    def _current_now(self) -> float:
        i = self.conductance_S() * self.v_applied
        if abs(i) > self.limit_A:
            i = math.copysign(self.limit_A, i)
        return i

    def advance(self, t_s: float) -> None:
        """Evolve the specimen up to experiment time ``t_s`` at the present bias.

        Charge is integrated exactly (the bias is piecewise constant between
        :meth:`set_drive` calls); the filament model is updated only at the fixed
        grid times ``k * step_s``. So the outcome does not depend on when (or how
        often) the specimen is looked at: imaging has no effect.
        """
        with self._lock:
            step = self.params.step_s
            while self.t < t_s:
                grid = (math.floor(self.t / step + 1e-9) + 1) * step
                t_next = min(t_s, grid)
                dq = self._current_now() * (t_next - self.t)
                self.charge_C += dq
                self._pending_C += dq
                self._pending_CV += dq * self.v_applied
                self.t = t_next
                if t_next >= grid - 1e-9:
                    v_step = self._pending_CV / self._pending_C if self._pending_C > 0 else 0.0
                    self.model.advance(self._pending_C, grid, v_step)
                    self._pending_C = self._pending_CV = 0.0
                    if not self.shorted and self.model.seeds and self.model.bridges(self.dist_top, self.dist_right):
                        self.shorted = True

    def set_drive(self, t_s: float, voltage_V: float, limit_A: float = math.inf) -> None:
        """From ``t_s`` on the specimen sees ``voltage_V`` (0 when the output is off)."""
        with self._lock:
            self.advance(t_s)
            self.v_applied = float(voltage_V)
            self.limit_A = float(limit_A)

    def current_noise_A(self, i_A: float) -> float:
        """One draw of measurement noise (A) for a reading of ``i_A``: relative plus floor."""
        p = self.params
        return float(self._noise_rng.normal(0.0, p.noise_rel * abs(i_A) + p.noise_floor_A))

    # -- imaging ----------------------------------------------------------------------------------
    def frame(self, t_s: float) -> np.ndarray:
        """Render the next delivered frame at ``t_s`` (uint16) and book it for the ground truth."""
        with self._lock:
            if t_s > self.t:
                self.advance(t_s)
            if self._drift0 is None:
                self._drift0 = self.drift(t_s)
            rel = self.frame_drift_px(t_s)
            p = self.model.p
            xyr = [(s.x, s.y, s.radius_px(p)) for s in self.model.seeds]
            idx = self.frames_delivered
            for s in self.model.seeds:
                if s.first_frame < 0:
                    s.first_frame = idx
                    s.first_seen_s = float(t_s)
            self.frames_delivered += 1
            self.frame_times.append(float(t_s))
            hp = self.params.haadf
        # rendered outside the lock: the source-meter's readings (advance) never wait for a frame
        return render(self.base, xyr, drift_px=rel, gain=brightness(t_s, hp), p=hp, rng=self._frame_rng)

    def frame_drift_px(self, t_s: float) -> np.ndarray:
        """(dx, dy) px: where a first-frame position ``p`` appears at ``t_s`` is ``p + (dx, dy)``."""
        d0 = self._drift0 if self._drift0 is not None else self.drift(t_s)
        return self.drift(t_s) - d0

    @property
    def pixel_size_m(self) -> float:
        return self.scene.pixel_size_m

    # -- ground truth -------------------------------------------------------------------------------
    def truth(self, recorded_times=None) -> dict:
        """Seeds seen in at least one frame: arrays ``x_px, y_px, first_frame`` (+ diagnostics).

        Without ``recorded_times`` the frame indices and the first-frame coordinates refer to the
        frames this specimen delivered. With ``recorded_times`` (the times of the frames that were
        actually recorded, s) they refer to the recorded series: a recorder may drop a delivered
        frame (e.g. one scanned just before the beam was blanked).
        """
        with self._lock:
            seen = [s for s in self.model.seeds if s.first_frame >= 0]
            p = self.model.p
            first = np.array([s.first_frame for s in seen], np.int64)
            x = np.array([s.x for s in seen], float)
            y = np.array([s.y for s in seen], float)
            if recorded_times is not None:
                rt = np.asarray(recorded_times, float)
                t_seen = np.array([s.first_seen_s for s in seen], float)
                first = np.searchsorted(rt, t_seen - 1e-9, side="left").astype(np.int64)
                keep = first < rt.size              # never recorded: not in the truth
                seen = [s for s, k in zip(seen, keep) if k]
                first, x, y = first[keep], x[keep], y[keep]
                if rt.size:
                    dx, dy = self.frame_drift_px(float(rt[0]))
                    x, y = x + dx, y + dy
            return {
                "x_px": x,
                "y_px": y,
                "first_frame": first,
                "t_nucleation_s": np.array([s.t_nucleation_s for s in seen], float),
                "kind": np.array([s.kind for s in seen], dtype="S9"),
                "grain_a": np.array([s.grains[0] for s in seen], np.int64),
                "grain_b": np.array([s.grains[-1] if len(s.grains) > 1 else 0 for s in seen], np.int64),
                "radius_px": np.array([s.radius_px(p) for s in seen], float),
            }

    @staticmethod
    def _recorded_frame_times(writer):
        """Times of the frames a SessionWriter has recorded (None when it cannot tell)."""
        get = getattr(writer, "recorded_frame_times", None)
        return None if get is None else get()

    def write_truth(self, writer) -> None:
        """Write ``/entry/sample/truth/seeds`` and ``/entry/sample/microstructure`` through a SessionWriter."""
        t = self.truth(self._recorded_frame_times(writer))
        attrs = {"seed": self.seed, "coordinates": "first-frame pixels, centres at integers",
                 "contrast": "brighter (Na adds projected mass)", "frames_delivered": self.frames_delivered,
                 "shorted": bool(self.shorted)}
        writer.write_group("/entry/sample/truth/seeds", t, attrs)
        self._write_microstructure(writer)

    def _write_microstructure(self, writer) -> None:
        """The microstructure file layout under ``/entry/sample/microstructure`` of the session
        (through :meth:`SessionWriter.modify`, or straight into an h5py group)."""
        from insitu.analysis.transport.microstructure import write_microstructure

        path = "/entry/sample/microstructure"
        m = self.microstructure

        def change(f):
            if path in f:
                del f[path]
            write_microstructure(f.require_group(path), m)

        modify = getattr(writer, "modify", None)
        if modify is None:  # a plain h5py.File / Group
            change(writer)
        else:
            modify(change)


def run_timeline(specimen: VirtualSpecimen, timeline, frame_period_s: float = 25.0, on_frame=None,
                 dt_s: float = 1.0) -> int:
    """Drive ``specimen`` through an expanded protocol without an engine (offline, fast).

    Ramps are applied as ``dt_s`` staircases; a frame is rendered every ``frame_period_s``
    while the segment is unblanked and passed to ``on_frame(frame, time_s)``. Used by
    tests and benchmarks; real runs go through :class:`insitu.control.engine.Engine`.

    Parameters
    ----------
    specimen : VirtualSpecimen
    timeline : insitu.control.protocol.Timeline (``expand(protocol)``)
    frame_period_s : float
    on_frame : callable(frame, time_s), optional
    dt_s : float

    Returns
    -------
    int
        Number of frames rendered.
    """
    n = 0
    t_frame = frame_period_s
    for seg in timeline.segments:
        t0, t1 = float(seg.t_start_s), float(seg.t_end_s)
        t = t0
        while t < t1 - 1e-9:
            te = min(t1, t + dt_s)
            tm = 0.5 * (t + te)
            f = (tm - t0) / (t1 - t0) if t1 > t0 else 1.0
            specimen.set_drive(t, seg.v_start_V + f * (seg.v_end_V - seg.v_start_V))
            while t_frame <= te:
                if not seg.blanked:
                    fr = specimen.frame(t_frame)
                    n += 1
                    if on_frame is not None:
                        on_frame(fr, t_frame)
                t_frame += frame_period_s
            t = te
    specimen.set_drive(timeline.duration_s, 0.0)
    return n
