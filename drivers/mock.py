"""Pure-Python mock instruments for tests and dry runs.

:class:`MockSourceMeter` is a resistive load behind an ideal source with a
current limit; it can develop a short after a given time and can drop its
connection, to exercise the engine's safety paths. :class:`MockBeamBlanker`
remembers its state. :class:`NoiseFrameSource` produces Poisson-noise frames at
a fixed rate while the beam is unblanked. The virtual specimen
(:mod:`insitu.virtual`) provides physics-backed replacements.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from insitu.core.clock import Clock
from insitu.core.errors import ConnectionLost, InstrumentError

from .interfaces import Frame, Measurement, SourceState
from .producer import DEFAULT_MAXSIZE, BackgroundProducer


class MockSourceMeter:
    """An ideal voltage source with a current limit driving a resistor.

    Parameters
    ----------
    resistance_ohm : float
        Load resistance (default 50 MΩ: 17 V -> 340 nA).
    clock : Clock, optional
        Experiment clock for timestamps and the short/drop schedule.
    short_after_s : float, optional
        From this clock time on the load becomes ``short_resistance_ohm``.
    drop_after_s : float, optional
        From this clock time every call raises :class:`ConnectionLost`
        until :meth:`reconnect` is called (the output keeps its state, as a
        real instrument does when its controller goes away).
    output_on, level_V : initial state "as found".
    noise_A : float
        Gaussian current noise (standard deviation, A).

    Examples
    --------
    >>> sm = MockSourceMeter(resistance_ohm=1e6)
    >>> sm.configure(compliance_current=1e-3, voltage_range=20)
    >>> sm.output = True
    >>> sm.set_voltage(2.0)
    >>> round(sm.measure().current_A, 9)
    2e-06
    """

    model = "MOCK"

    def __init__(self, resistance_ohm: float = 50e6, clock: Clock | None = None, *,
                 short_after_s: float | None = None, short_resistance_ohm: float = 1e3,
                 drop_after_s: float | None = None, output_on: bool = False, level_V: float = 0.0,
                 current_limit_A: float = 1.05e-1, noise_A: float = 0.0, seed: int = 0):
        self.clock = clock or Clock()
        self.resistance_ohm = float(resistance_ohm)
        self.short_after_s = short_after_s
        self.short_resistance_ohm = float(short_resistance_ohm)
        self.drop_after_s = drop_after_s
        self.noise_A = float(noise_A)
        self._rng = np.random.default_rng(seed)
        self._output = bool(output_on)
        self._level = float(level_V)
        self._limit = float(current_limit_A)
        self._range = 210.0
        self._dropped = False
        self._lock = threading.Lock()
        self.idn = "insitu,MockSourceMeter,0,1.0"
        self.log: list[tuple[float, str, float]] = []  # (time_s, what, value): an instrument-side log

    # -- transport -------------------------------------------------------
    def _check_link(self) -> None:
        if self.drop_after_s is not None and not self._dropped and self.clock.now() >= self.drop_after_s:
            self._dropped = True
        if self._dropped:
            raise ConnectionLost("mock source-meter: connection lost")

    def reconnect(self) -> None:
        """Re-establish the link after a drop (state is kept)."""
        self._dropped = False
        self.drop_after_s = None

    # -- physics ---------------------------------------------------------
    def load_resistance(self, t_s: float) -> float:
        """Load resistance in Ω at clock time ``t_s``."""
        if self.short_after_s is not None and t_s >= self.short_after_s:
            return self.short_resistance_ohm
        return self.resistance_ohm

    def _current(self, t_s: float) -> tuple[float, float, bool]:
        if not self._output:
            return 0.0, 0.0, False
        i = self._level / self.load_resistance(t_s)
        if abs(i) > self._limit:  # the source drops its voltage to hold the limit
            i = math.copysign(self._limit, i)
            return i * self.load_resistance(t_s), i, True
        return self._level, i, False

    # -- SourceMeter protocol -------------------------------------------
    def configure(self, compliance_current: float, voltage_range: float, nplc: float = 1.0) -> None:
        with self._lock:
            self._check_link()
            if not (0 < compliance_current <= 1.05):
                raise InstrumentError(f"mock: compliance current {compliance_current!r} A out of range")
            if not (0 < voltage_range <= 210):
                raise InstrumentError(f"mock: voltage range {voltage_range!r} V out of range")
            self._limit = float(compliance_current)
            self._range = float(voltage_range)
            self.log.append((self.clock.now(), "limit", self._limit))

    def set_current_limit(self, current_A: float) -> None:
        """Set the current limit alone (A), with the output as it is."""
        with self._lock:
            self._check_link()
            if not (0 < current_A <= 1.05):
                raise InstrumentError(f"mock: current limit {current_A!r} A out of range")
            self._limit = float(current_A)
            self.log.append((self.clock.now(), "limit", self._limit))

    def set_voltage(self, v: float) -> None:
        with self._lock:
            self._check_link()
            if not math.isfinite(v) or abs(v) > self._range:
                raise InstrumentError(f"mock: level {v!r} V outside the ±{self._range:g} V range")
            self._level = float(v)
            self.log.append((self.clock.now(), "level", self._level))

    def measure(self) -> Measurement:
        with self._lock:
            self._check_link()
            t = self.clock.now()
            v, i, hit = self._current(t)
            if self._output and self.noise_A:
                i += float(self._rng.normal(0.0, self.noise_A))
            return Measurement(t, v, i, hit)

    @property
    def output(self) -> bool:
        with self._lock:
            self._check_link()
            return self._output

    @output.setter
    def output(self, on: bool) -> None:
        with self._lock:
            self._check_link()
            self._output = bool(on)
            self.log.append((self.clock.now(), "output", float(self._output)))

    def read_state(self) -> SourceState:
        with self._lock:
            self._check_link()
            return SourceState(self._output, self._level, self._limit)

    def close(self) -> None:
        pass


class MockBeamBlanker:
    """Remembers whether the beam is blanked (starts blanked: the safe state)."""

    def __init__(self, blanked: bool = True):
        self._blanked = bool(blanked)
        self.idn = "insitu,MockBeamBlanker,0,1.0"

    def blank(self) -> None:
        self._blanked = True

    def unblank(self) -> None:
        self._blanked = False

    def is_blanked(self) -> bool:
        return self._blanked

    def close(self) -> None:
        pass


#: pixels drawn in one numpy call by NoiseFrameSource (~2 ms: the GIL is free between two bands)
NOISE_BAND_PIXELS = 1 << 16
#: Poisson frames NoiseFrameSource draws; later frames are random cyclic shifts of them
NOISE_BANK = 8


class NoiseFrameSource:
    """Poisson-noise frames at ``rate_hz`` while the beam is unblanked.

    The first :data:`NOISE_BANK` frames are fresh Poisson draws; later ones are
    random cyclic shifts of those (cheap at 1024² and 10 frames/s). The frames are drawn in a background thread
    (:class:`~insitu.drivers.producer.BackgroundProducer`) on the clock's
    schedule; ``poll()`` only takes the frames made so far and never waits.

    Parameters
    ----------
    shape : (ny, nx)
    rate_hz : float
        Frames per experiment second.
    clock : Clock
    blanker : BeamBlanker, optional
        No frames are produced while it reports blanked.
    mean_counts : float
        Mean Poisson counts per pixel.
    pixel_size_m : float
    max_queued : int
        Frames made but not yet polled that are kept (beyond: the oldest is dropped, counted in ``dropped``).

    Example
    -------
    >>> import time
    >>> src = NoiseFrameSource((64, 64), rate_hz=20.0, clock=Clock())
    >>> src.start(); time.sleep(0.3); frames = src.poll(); src.stop()
    True
    >>> len(frames) >= 2 and frames[0].data.shape == (64, 64)
    True
    """

    def __init__(self, shape=(128, 128), rate_hz: float = 2.0, clock: Clock | None = None,
                 blanker=None, mean_counts: float = 100.0, pixel_size_m: float = 5e-9, seed: int = 0,
                 max_queued: int = DEFAULT_MAXSIZE):
        self.shape = tuple(shape)
        self.period_s = 1.0 / rate_hz
        self.clock = clock or Clock()
        self.blanker = blanker
        self.mean_counts = mean_counts
        self.pixel_size_m = pixel_size_m
        self._rng = np.random.default_rng(seed)
        self._bank: list[np.ndarray] = []
        self._next_t: float | None = None
        self._index = 0
        self.idn = "insitu,NoiseFrameSource,0,1.0"
        self._producer = BackgroundProducer(self._step, name="noise", maxsize=max_queued)

    @property
    def dropped(self) -> int:
        """Frames made but dropped because nobody polled them in time."""
        return self._producer.dropped

    def start(self) -> None:
        self._next_t = self.clock.now() + self.period_s
        self._producer.start()

    def _step(self) -> tuple[list[Frame], float]:
        """Frames due now (producer thread) and the wall time until the next one is due."""
        nxt = self._next_t
        if nxt is None:
            return [], 0.05
        now = self.clock.now()
        out = []
        while nxt <= now:
            t = nxt
            nxt += self.period_s
            if self.blanker is not None and self.blanker.is_blanked():
                continue
            out.append(Frame(self._index, t, self._noise(), {"pixel_size_m": self.pixel_size_m}))
            self._index += 1
        self._next_t = nxt
        return out, min(0.05, max(0.0, (nxt - self.clock.now()) / self.clock.time_scale))

    def _noise(self) -> np.ndarray:
        """One Poisson frame: one of :data:`NOISE_BANK` frames drawn once, shifted by a random offset.

        Drawing a fresh 1024² Poisson frame costs ~50 ms of CPU with the GIL held; at 10 frames/s
        that starves the control loop and the GUI. The bank is drawn a band of rows at a time (the
        GIL is free between two bands); each frame after that is a cyclic shift of a bank frame (a
        copy, which numpy does without the GIL): still Poisson counts, distinct frames.
        """
        ny, nx = self.shape
        if len(self._bank) < NOISE_BANK:
            out = np.empty((ny, nx), np.uint16)
            rows = max(1, NOISE_BAND_PIXELS // max(nx, 1))
            for r0 in range(0, ny, rows):
                r1 = min(ny, r0 + rows)
                out[r0:r1] = self._rng.poisson(self.mean_counts, (r1 - r0, nx))
            self._bank.append(out)
            return out.copy()
        base = self._bank[int(self._rng.integers(NOISE_BANK))]
        return np.roll(base, (int(self._rng.integers(ny)), int(self._rng.integers(nx))), axis=(0, 1))

    def poll(self) -> list[Frame]:
        """The frames made since the last call (never waits)."""
        return self._producer.drain()

    def stop(self) -> bool:
        """Stop making frames; False when the producer thread did not end in time (reported, left behind)."""
        self._next_t = None
        ok = self._producer.stop()
        self._next_t = None
        return ok
