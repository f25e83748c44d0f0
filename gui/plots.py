"""Bias and current against time, bounded in size however long the run.

Every curve is fed from a :class:`~insitu.gui.decimate.DecimatedTrace`, so the
number of drawn points never exceeds ``2 × capacity`` per curve; markers
(events, seed appearances) are capped too. Redrawing is throttled by the
caller (``refresh`` a few times a second).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtWidgets

from .decimate import DecimatedTrace

#: event kinds drawn as markers, and their colours
EVENT_COLOURS = {
    "abort": (255, 60, 60), "fault": (255, 60, 60), "short": (255, 60, 60),
    "suspender": (255, 160, 40), "compliance": (255, 160, 40), "stall": (255, 160, 40),
    "beam": (120, 170, 255), "step": (110, 110, 130), "start": (140, 220, 140), "end": (140, 220, 140),
}


#: axis ranges of the empty plots (before the first sample)
EMPTY_BIAS_RANGE_V = (-1.0, 1.0)
EMPTY_CURRENT_RANGE_A = (-1e-6, 1e-6)

class TracePlots(QtWidgets.QWidget):
    """Setpoint and measured voltage (top) and current (bottom, optional log |I|) against time.

    Parameters
    ----------
    capacity : int
        Buckets per trace (each draws as ≤ 2 points).
    max_markers : int
        Most event/seed markers kept (oldest removed first).
    """

    def __init__(self, parent=None, *, capacity: int = 1024, max_markers: int = 200):
        super().__init__(parent)
        self.capacity = capacity
        self.traces = {k: DecimatedTrace(capacity) for k in ("setpoint", "voltage", "current", "abs_current")}
        self.max_markers = max_markers
        self._markers: deque = deque()
        self._dirty = False

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        row = QtWidgets.QHBoxLayout()
        self.log_box = QtWidgets.QCheckBox("log |I|")
        self.log_box.toggled.connect(self.set_log)
        self.follow_box = QtWidgets.QCheckBox("follow last 5 min")
        self.follow_box.toggled.connect(lambda _: self._apply_follow())
        row.addWidget(QtWidgets.QLabel("Bias and current"))
        row.addStretch(1)
        row.addWidget(self.follow_box)
        row.addWidget(self.log_box)
        lay.addLayout(row)

        self.glw = pg.GraphicsLayoutWidget()
        self.v_plot = self.glw.addPlot(row=0, col=0)
        self.i_plot = self.glw.addPlot(row=1, col=0)
        self.i_plot.setXLink(self.v_plot)
        for p in (self.v_plot, self.i_plot):
            p.showGrid(x=True, y=True, alpha=0.25)
            p.setClipToView(True)
            p.setDownsampling(auto=True, mode="peak")
            p.getAxis("left").setWidth(64)
            p.setMenuEnabled(False)
        self.v_plot.setLabel("left", "bias", units="V")
        self.v_plot.hideAxis("bottom")
        self.i_plot.setLabel("left", "current", units="A")
        self.i_plot.setLabel("bottom", "time", units="s")
        self.i_plot.getAxis("bottom").enableAutoSIPrefix(False)   # seconds stay seconds (no "ks")
        self.v_plot.addLegend(offset=(8, 5), labelTextSize="10pt")
        self.set_curve = self.v_plot.plot(pen=pg.mkPen((150, 150, 170), width=1.5, style=pg.QtCore.Qt.DashLine),
                                          name="setpoint")
        self.v_curve = self.v_plot.plot(pen=pg.mkPen((255, 190, 60), width=2), name="measured")
        self.i_curve = self.i_plot.plot(pen=pg.mkPen((90, 200, 255), width=2))
        lay.addWidget(self.glw, 1)
        self._empty = False
        self._show_empty()

    def _show_empty(self) -> None:
        """Before any sample: ranges of this experiment (±1 µA, ±1 V over a minute), not pyqtgraph's 0..1 A."""
        self._empty = True
        self.v_plot.setRange(xRange=(0.0, 60.0), yRange=EMPTY_BIAS_RANGE_V, padding=0)
        self.i_plot.setYRange(*EMPTY_CURRENT_RANGE_A, padding=0)

    # ------------------------------------------------------------------ data
    def add_samples(self, t, setpoint, voltage, current) -> None:
        """Append bias samples (arrays of equal length, SI units)."""
        t = np.asarray(t, float)
        if t.size == 0:
            return
        self.traces["setpoint"].extend(t, setpoint)
        self.traces["voltage"].extend(t, voltage)
        self.traces["current"].extend(t, current)
        self.traces["abs_current"].extend(t, np.abs(np.asarray(current, float)))
        self._dirty = True

    def add_marker(self, t: float, kind: str, text: str = "") -> None:
        """A vertical line at ``t`` on both plots (event or seed appearance)."""
        colour = (90, 230, 120) if kind == "seed" else EVENT_COLOURS.get(kind, (200, 200, 200))
        style = pg.QtCore.Qt.DotLine if kind in ("seed", "step") else pg.QtCore.Qt.SolidLine
        pen = pg.mkPen(colour, width=1.2, style=style)
        lines = []
        for p in (self.v_plot, self.i_plot):
            ln = pg.InfiniteLine(pos=t, angle=90, pen=pen, movable=False)
            if p is self.v_plot and text:
                ln.setToolTip(f"{t:.1f} s  {kind}: {text}")
            p.addItem(ln, ignoreBounds=True)
            lines.append((p, ln))
        self._markers.append(lines)
        while len(self._markers) > self.max_markers:
            for p, ln in self._markers.popleft():
                p.removeItem(ln)

    def clear(self) -> None:
        for tr in self.traces.values():
            tr.clear()
        while self._markers:
            for p, ln in self._markers.popleft():
                p.removeItem(ln)
        self._dirty = True
        self.refresh()
        self._show_empty()

    def set_log(self, on: bool) -> None:
        self.i_plot.setLogMode(y=on)
        self.i_plot.setLabel("left", "|current|" if on else "current", units="A")
        self._dirty = True
        self.refresh()

    def _apply_follow(self) -> None:
        if self.follow_box.isChecked():
            t_end = self.traces["voltage"].last_time
            if np.isfinite(t_end):
                self.v_plot.setXRange(max(0.0, t_end - 300.0), t_end + 5.0, padding=0)
        else:
            self.v_plot.enableAutoRange(axis="x")

    def refresh(self) -> None:
        """Redraw the curves if new samples arrived since the last call."""
        if not self._dirty:
            return
        self._dirty = False
        if self._empty and len(self.traces["voltage"]):
            self._empty = False
            for p in (self.v_plot, self.i_plot):
                p.enableAutoRange()
        self.set_curve.setData(*self.traces["setpoint"].curve())
        self.v_curve.setData(*self.traces["voltage"].curve())
        if self.log_box.isChecked():
            t, y = self.traces["abs_current"].curve()
            y = np.where(y > 0, y, np.nan)
            self.i_curve.setData(t, y, connect="finite")
        else:
            self.i_curve.setData(*self.traces["current"].curve())
        self._apply_follow()

    def point_count(self) -> int:
        """Points currently held by the drawn curves (bounded by 2 × capacity each)."""
        n = 0
        for c in (self.set_curve, self.v_curve, self.i_curve):
            x = c.xData
            n += 0 if x is None else len(x)
        return n

    @property
    def n_markers(self) -> int:
        return len(self._markers)
