"""Status bar: instruments, session file and size, frame rates, frame/bias sync error."""
from __future__ import annotations

import bisect
import os
import time
from collections import deque

from PyQt5 import QtWidgets


class RateMeter:
    """Events per wall second over a sliding window.

    Examples
    --------
    >>> m = RateMeter(window_s=1.0)
    >>> for k in range(11): m.tick(now=k * 0.1)
    >>> round(m.rate(now=1.0), 6)
    10.0
    """

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._t: deque = deque()

    def tick(self, n: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for _ in range(n):
            self._t.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._t and self._t[0] < now - self.window_s:
            self._t.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._t) < 2:
            return 0.0
        span = self._t[-1] - self._t[0]
        return (len(self._t) - 1) / span if span > 0 else 0.0


class SyncTracker:
    """How well frame times line up with the bias log.

    For each frame, once the bias log has passed its time: ``dt`` = time to
    the nearest bias sample (s), ``dv`` = the frame's recorded bias minus the
    bias log interpolated at the frame time (V). Keeps the worst of the last
    ``window`` frames.

    Examples
    --------
    >>> s = SyncTracker()
    >>> for k in range(10): s.add_bias(k * 0.2, k * 0.2)   # a 1 V/s ramp
    >>> s.add_frame(0.5, 0.5)
    >>> s.add_bias(2.0, 2.0)
    >>> [round(x, 6) for x in s.worst()]
    [0.1, 0.0]
    """

    def __init__(self, window: int = 50, keep: int = 4000):
        self._bt: list[float] = []
        self._bv: list[float] = []
        self._keep = keep
        self._pending: deque = deque()
        self._dt: deque = deque(maxlen=window)
        self._dv: deque = deque(maxlen=window)

    def add_bias(self, t: float, v: float) -> None:
        if self._bt and t < self._bt[-1]:
            return  # out of order: ignore
        self._bt.append(t)
        self._bv.append(v)
        if len(self._bt) > 2 * self._keep:
            del self._bt[:self._keep]
            del self._bv[:self._keep]
        self._resolve()

    def add_frame(self, t: float, bias_V: float) -> None:
        self._pending.append((t, bias_V))
        self._resolve()

    def _resolve(self) -> None:
        bt, bv = self._bt, self._bv
        while self._pending and bt and bt[-1] >= self._pending[0][0]:
            t, v = self._pending.popleft()
            j = bisect.bisect_left(bt, t)
            if j == 0:
                self._dt.append(abs(bt[0] - t))
                self._dv.append(v - bv[0])
                continue
            t0, t1, v0, v1 = bt[j - 1], bt[j], bv[j - 1], bv[j]
            self._dt.append(min(t - t0, t1 - t))
            v_log = v0 + (v1 - v0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)
            self._dv.append(v - v_log)

    def worst(self) -> tuple[float, float]:
        """(max |dt| s, max |dv| V) over the recent frames (NaN before any)."""
        if not self._dt:
            return float("nan"), float("nan")
        return max(self._dt), max(abs(x) for x in self._dv)


def _fmt_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n} B"


class StatusBar(QtWidgets.QStatusBar):
    """Instruments, session path + size, incoming/displayed frames per second, sync error."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.instruments = QtWidgets.QLabel("instruments: —")
        self.session = QtWidgets.QLabel("session: —")
        self.rates = QtWidgets.QLabel("frames: —")
        self.sync = QtWidgets.QLabel("sync: —")
        self.lost = QtWidgets.QLabel("")
        self.lost.setStyleSheet("color: #ff5555; font-weight: bold")
        self.lost.setVisible(False)
        for w in (self.instruments, self.session, self.rates, self.lost, self.sync):
            w.setObjectName("statusField")
            self.addPermanentWidget(w, 1 if w is self.session else 0)
        self.session_path: str | None = None

    def set_instruments(self, text: str) -> None:
        self.instruments.setText(text)
        self.instruments.setToolTip(text)

    def set_session(self, path: str | None, label: str = "session") -> None:
        self.session_path = path
        self._label = label
        self.update_session_size()

    def update_session_size(self) -> None:
        p = self.session_path
        if not p:
            self.session.setText("session: not recording")
            return
        try:
            size = _fmt_size(os.path.getsize(p))
        except OSError:
            size = "—"
        self.session.setText(f"{getattr(self, '_label', 'session')}: {p}  ({size})")
        self.session.setToolTip(p)

    def set_rates(self, incoming_fps: float, shown_fps: float, dropped: int) -> None:
        self.rates.setText(f"frames in {incoming_fps:4.1f}/s · shown {shown_fps:4.1f}/s · skipped {dropped}")

    def set_lost_frames(self, n: int) -> None:
        """Frames lost on the way to the file (not recorded): shown in red once there is one."""
        self.lost.setVisible(n > 0)
        self.lost.setText(f"{n} frame{'s' if n != 1 else ''} NOT RECORDED" if n > 0 else "")
        self.lost.setToolTip("the frame source or the recorder fell behind; the session's events say when"
                             if n > 0 else "")

    def set_sync(self, dt_s: float, dv_V: float) -> None:
        if dt_s != dt_s:
            self.sync.setText("sync: —")
            return
        self.sync.setText(f"sync frame↔bias: Δt ≤ {dt_s * 1e3:.0f} ms, ΔV ≤ {dv_V * 1e3:.1f} mV")
