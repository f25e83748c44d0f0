"""Mock instruments backed by one :class:`~insitu.virtual.specimen.VirtualSpecimen`.

* :class:`VirtualSourceMeter` — the :class:`~insitu.drivers.mock.MockSourceMeter`
  protocol and safety behaviour (configure, limit, output, read_state, range
  checks, connection drop), but its load is the specimen: current = network
  conductance × applied voltage (sub-µA), with noise, rising as filaments grow
  and a short when a filament bridges the electrodes.
* :class:`VirtualBeamBlanker` — remembers its state *with time stamps*, so frames
  due at a past time see the beam state of that time.
* :class:`VirtualFrameSource` — HAADF frames of the specimen at ``rate_hz`` (per
  experiment second) while the beam is unblanked; ``meta`` carries
  ``pixel_size_m``, ``dwell_s``, ``probe_current_A`` and ``frame_time_s``.

All three read one :class:`~insitu.core.clock.Clock`, so ``--time-scale`` accelerates
the whole virtual experiment.
"""
from __future__ import annotations

import bisect
import math
import threading
import time

from insitu.core.clock import Clock
from insitu.control.config import DEFAULT_FRAME_INTERVAL_S
from insitu.drivers.interfaces import Frame, Measurement
from insitu.drivers.mock import MockBeamBlanker, MockSourceMeter
from insitu.drivers.producer import DEFAULT_MAXSIZE, BackgroundProducer
from insitu.drivers.interfaces import Instruments


#: frame rate when the config does not set ``frames.rate_hz`` (the project-wide default interval)
DEFAULT_RATE_HZ = 1.0 / DEFAULT_FRAME_INTERVAL_S
#: under an accelerated clock, one rendering step renders at most this much wall time of frames (s)
POLL_BUDGET_WALL_S = 0.25


class VirtualSourceMeter(MockSourceMeter):
    """Source-meter whose load is the virtual specimen.

    Parameters
    ----------
    specimen : VirtualSpecimen
    clock : Clock
    **kwargs : passed to :class:`MockSourceMeter` (``drop_after_s``, ``output_on``, ``level_V``, ...)

    Examples
    --------
    >>> sm = VirtualSourceMeter(specimen, clock)              # doctest: +SKIP
    >>> sm.configure(1e-6, 20); sm.output = True; sm.set_voltage(17)  # doctest: +SKIP
    >>> 1e-8 < sm.measure().current_A < 1e-6                  # doctest: +SKIP
    True
    """

    model = "VIRTUAL"

    def __init__(self, specimen, clock: Clock, **kwargs):
        super().__init__(resistance_ohm=1.0 / specimen.g0_S, clock=clock, **kwargs)
        self.specimen = specimen
        self.idn = f"insitu,VirtualSourceMeter,specimen-{specimen.seed},1.0"
        self._sync(self.clock.now())

    def _sync(self, t: float) -> None:
        v = self._level if self._output else 0.0
        self.specimen.set_drive(t, v, self._limit)

    # physics: the specimen is the load
    def load_resistance(self, t_s: float) -> float:
        self.specimen.advance(t_s)
        return 1.0 / self.specimen.conductance_S()

    def configure(self, compliance_current: float, voltage_range: float, nplc: float = 1.0) -> None:
        super().configure(compliance_current, voltage_range, nplc)
        self._sync(self.clock.now())

    def set_voltage(self, v: float) -> None:
        super().set_voltage(v)
        self._sync(self.clock.now())

    @MockSourceMeter.output.setter
    def output(self, on: bool) -> None:
        MockSourceMeter.output.fset(self, on)
        self._sync(self.clock.now())

    def measure(self) -> Measurement:
        with self._lock:
            self._check_link()
            t = self.clock.now()
            v, i, hit = self._current(t)
            if self._output and not hit and i != 0.0:
                i += self.specimen.current_noise_A(i)
            return Measurement(t, v, i, hit)


class VirtualBeamBlanker(MockBeamBlanker):
    """Beam blanker with a time-stamped history (starts blanked: the safe state)."""

    def __init__(self, clock: Clock, blanked: bool = True):
        super().__init__(blanked)
        self.clock = clock
        self.idn = "insitu,VirtualBeamBlanker,0,1.0"
        self._times = [-math.inf]
        self._states = [bool(blanked)]
        self._hlock = threading.Lock()

    def _record(self, blanked: bool) -> None:
        with self._hlock:
            self._times.append(self.clock.now())
            self._states.append(bool(blanked))

    def blank(self) -> None:
        super().blank()
        self._record(True)

    def unblank(self) -> None:
        super().unblank()
        self._record(False)

    def was_blanked(self, t_s: float) -> bool:
        """Beam state at experiment time ``t_s``."""
        with self._hlock:
            k = bisect.bisect_right(self._times, t_s) - 1
            return self._states[max(k, 0)]


class VirtualFrameSource:
    """HAADF frames of the specimen at ``rate_hz`` while the beam is unblanked.

    A frame is due every ``1/rate_hz`` experiment seconds after :meth:`start`;
    it is delivered (and counted in the ground truth) only if the beam was
    unblanked at its time. Frames are rendered in a background thread
    (:class:`~insitu.drivers.producer.BackgroundProducer`) as they fall due;
    ``poll()`` only takes those rendered so far.
    """

    def __init__(self, specimen, clock: Clock, blanker: VirtualBeamBlanker | None = None, rate_hz: float = 1.0,
                 max_queued: int = DEFAULT_MAXSIZE):
        self.specimen = specimen
        self.clock = clock
        self.blanker = blanker
        self.period_s = 1.0 / float(rate_hz)
        self._next_t: float | None = None
        self._index = 0
        self.skipped = 0
        self._render_s = 0.02  # running mean of one frame's render time (wall s)
        self._lock = threading.Lock()
        self.idn = f"insitu,VirtualFrameSource,specimen-{specimen.seed},1.0"
        self._producer = BackgroundProducer(self._step, name=f"virtual-{specimen.seed}", maxsize=max_queued)
        hp = specimen.params.haadf
        self.meta = {"pixel_size_m": specimen.pixel_size_m, "dwell_s": hp.dwell_s,
                     "probe_current_A": hp.probe_current_A,
                     "frame_time_s": hp.frame_time_s(specimen.base.shape), "source": "virtual"}

    def set_rate(self, rate_hz: float) -> None:
        """Change the frame rate (frames per experiment second)."""
        if not rate_hz > 0:
            raise ValueError(f"frame rate must be > 0, got {rate_hz!r}")
        with self._lock:
            self.period_s = 1.0 / float(rate_hz)
            if self._next_t is not None:
                self._next_t = min(self._next_t, self.clock.now() + self.period_s)

    def _blanked(self, t: float) -> bool:
        if self.blanker is None:
            return False
        if hasattr(self.blanker, "was_blanked"):
            return self.blanker.was_blanked(t)
        return self.blanker.is_blanked()

    def start(self) -> None:
        with self._lock:
            self._next_t = self.clock.now() + self.period_s
        self._producer.start()

    @property
    def dropped(self) -> int:
        """Frames rendered but dropped because nobody polled them in time (the queue was full)."""
        return self._producer.dropped

    def poll(self) -> list[Frame]:
        """The frames rendered since the last call; never waits (rendering runs in a background thread)."""
        return self._producer.drain()

    def _step(self) -> tuple[list[Frame], float]:
        """Render the frames due now (producer thread); the wall time until the next one is due."""
        with self._lock:
            if self._next_t is None:
                return [], 0.05
            now = self.clock.now()
            # On an accelerated clock a renderer that falls behind (a busy machine) would
            # have every due frame rendered, which makes the next step later still and
            # snowballs. Only as many of the newest due frames as render within
            # POLL_BUDGET_WALL_S are kept; older ones are skipped (counted in
            # ``skipped``). At real-time speed nothing is ever skipped.
            scale = getattr(self.clock, "time_scale", 1.0)
            if scale > 1.0 and self._next_t <= now:
                due = int((now - self._next_t) // self.period_s) + 1
                keep = max(2, int(POLL_BUDGET_WALL_S / self._render_s))
                if due > keep:
                    self._next_t += (due - keep) * self.period_s
                    self.skipped += due - keep
            due_times = []
            while self._next_t <= now:
                due_times.append(self._next_t)
                self._next_t += self.period_s
            next_t = self._next_t
        out = []
        for t in due_times:   # rendering without the lock: set_rate() and stop() never wait for it
            if self._blanked(t):
                continue
            t0 = time.perf_counter()
            data = self.specimen.frame(t)
            self._render_s = 0.8 * self._render_s + 0.2 * max(time.perf_counter() - t0, 1e-4)
            out.append(Frame(self._index, t, data, dict(self.meta)))
            self._index += 1
        wait = (next_t - self.clock.now()) / scale if scale > 0 else 0.05
        return out, min(0.05, max(0.0, wait))

    def stop(self) -> bool:
        """Stop rendering; False when the rendering thread did not end in time (reported, left behind)."""
        with self._lock:
            self._next_t = None
        return self._producer.stop()


def open_virtual_instruments(config, clock: Clock, seed: int = 0, *, specimen=None) -> Instruments:
    """Source-meter, beam blanker and frame source all backed by one virtual specimen.

    Parameters
    ----------
    config : InstrumentsConfig
        ``frames.rate_hz`` sets the frame rate (frames per experiment second; its
        default is :data:`insitu.control.config.DEFAULT_FRAME_INTERVAL_S`); ``beam.probe_current_A`` the probe current.
    clock : Clock
        Shared by everything (``time_scale`` accelerates the whole experiment).
    seed : int
        Specimen seed (microstructure, nucleation, noise).
    specimen : VirtualSpecimen, optional
        Use this specimen instead of building one.

    Returns
    -------
    Instruments
        With ``.specimen`` set (ground truth: ``specimen.write_truth(writer)``).
    """
    from insitu.virtual.specimen import SpecimenParams, VirtualSpecimen

    if specimen is None:
        params = SpecimenParams()
        if config is not None:
            params.haadf.probe_current_A = float(config.beam.probe_current_A)
        specimen = VirtualSpecimen(seed=seed, params=params)
    if specimen.t <= 0.0:
        # building the specimen took wall time the experiment clock should not count
        clock.restart()
    rate = float(config.frames.rate_hz) if config is not None else DEFAULT_RATE_HZ
    sm = VirtualSourceMeter(specimen, clock)
    blanker = VirtualBeamBlanker(clock)
    frames = VirtualFrameSource(specimen, clock, blanker=blanker, rate_hz=rate)
    probe = float(config.beam.probe_current_A) if config is not None else specimen.params.haadf.probe_current_A
    return Instruments(sm, blanker, frames, clock, probe, reconnect=None, specimen=specimen)
