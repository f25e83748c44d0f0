"""The protocol panel: what runs, where it is, and the buttons that control it.

Load/validate a protocol file, show its limits and the expanded timeline
(planned setpoint against protocol time, current step highlighted), big
readouts (bias, current, beam state, cumulative dose, elapsed/remaining),
Start, Pause/Resume, a big red Abort, and the event log. The panel only
emits signals; the main window decides what they do.
"""
from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtWidgets

from insitu.core.records import EngineState, EventKind
from insitu.core.units import format_current, format_duration


def timeline_curve(timeline) -> tuple[np.ndarray, np.ndarray]:
    """Planned setpoint (V) against protocol time (s) from a Timeline's segments.

    Examples
    --------
    >>> from types import SimpleNamespace as S
    >>> tl = S(segments=[S(t_start_s=0, t_end_s=10, v_start_V=0, v_end_V=5),
    ...                  S(t_start_s=10, t_end_s=20, v_start_V=5, v_end_V=5)])
    >>> [a.tolist() for a in timeline_curve(tl)]
    [[0.0, 10.0, 10.0, 20.0], [0.0, 5.0, 5.0, 5.0]]
    """
    t, v = [], []
    for s in getattr(timeline, "segments", ()):
        t += [float(s.t_start_s), float(s.t_end_s)]
        v += [float(s.v_start_V), float(s.v_end_V)]
    return np.array(t), np.array(v)


def segment_at(timeline, t_s: float) -> int:
    """Index of the segment running at protocol time ``t_s`` (-1 before the first / when empty)."""
    segs = getattr(timeline, "segments", ())
    for k, s in enumerate(segs):
        if s.t_start_s <= t_s < s.t_end_s:
            return k
    return len(segs) - 1 if segs and t_s >= segs[-1].t_end_s else -1


def beam_on_spans(timeline) -> list[tuple[float, float]]:
    """Contiguous (t_start, t_end) spans with the beam unblanked.

    Examples
    --------
    >>> from types import SimpleNamespace as S
    >>> tl = S(segments=[S(t_start_s=0, t_end_s=1, blanked=False), S(t_start_s=1, t_end_s=2, blanked=False),
    ...                  S(t_start_s=2, t_end_s=3, blanked=True), S(t_start_s=3, t_end_s=4, blanked=False)])
    >>> beam_on_spans(tl)
    [(0.0, 2.0), (3.0, 4.0)]
    """
    spans: list[list[float]] = []
    for s in getattr(timeline, "segments", ()):
        if getattr(s, "blanked", True) or not s.t_end_s > s.t_start_s:
            continue
        if spans and abs(spans[-1][1] - s.t_start_s) < 1e-9:
            spans[-1][1] = float(s.t_end_s)
        else:
            spans.append([float(s.t_start_s), float(s.t_end_s)])
    return [tuple(x) for x in spans]


class BigReadout(QtWidgets.QFrame):
    """A caption above a large number."""

    def __init__(self, caption: str, value: str = "—", parent=None):
        super().__init__(parent)
        self.setObjectName("readout")
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(8, 4, 8, 4)
        lay.setSpacing(0)
        self.caption = QtWidgets.QLabel(caption)
        self.caption.setObjectName("readoutCaption")
        self.value = QtWidgets.QLabel(value)
        self.value.setObjectName("readoutValue")
        self.value.setAlignment(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)
        lay.addWidget(self.caption)
        lay.addWidget(self.value)

    def set(self, text: str, colour: str | None = None) -> None:
        self.value.setText(text)
        self.value.setStyleSheet(f"color: {colour};" if colour else "")


class ProtocolPanel(QtWidgets.QWidget):
    """Protocol, progress, readouts, controls and event log."""

    load_requested = QtCore.pyqtSignal(str)
    start_clicked = QtCore.pyqtSignal()
    pause_clicked = QtCore.pyqtSignal()
    abort_clicked = QtCore.pyqtSignal()
    #: the operator disarms a closed-loop rule: "on_seed" or "until"
    disarm_requested = QtCore.pyqtSignal(str)
    #: the operator resumes after an on_seed: hold
    resume_clicked = QtCore.pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.timeline = None
        self._tl = (np.zeros(0), np.zeros(0))
        self._paused = False
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 4)
        lay.setSpacing(6)

        # --- protocol file ------------------------------------------------
        top = QtWidgets.QHBoxLayout()
        self.name_label = QtWidgets.QLabel("no protocol")
        self.name_label.setObjectName("protocolName")
        self.name_label.setWordWrap(True)
        # the name, the path and error messages come from the file: shown as text, never as rich text/HTML
        self.name_label.setTextFormat(QtCore.Qt.PlainText)
        self.load_button = QtWidgets.QPushButton("Load…")
        self.load_button.clicked.connect(self._browse)
        top.addWidget(self.name_label, 1)
        top.addWidget(self.load_button)
        lay.addLayout(top)
        self.limits_label = QtWidgets.QLabel("")
        self.limits_label.setObjectName("limits")
        self.limits_label.setWordWrap(True)
        lay.addWidget(self.limits_label)

        # --- planned timeline ----------------------------------------------
        self.tl_plot = pg.PlotWidget()
        self.tl_plot.setMinimumHeight(110)
        self.tl_plot.setMaximumHeight(150)
        self.tl_plot.setMenuEnabled(False)
        self.tl_plot.setMouseEnabled(False, False)
        self.tl_plot.hideButtons()
        self.tl_plot.showGrid(x=True, y=True, alpha=0.2)
        self.tl_plot.setLabel("left", "plan", units="V")
        self.tl_curve = self.tl_plot.plot(pen=pg.mkPen((160, 160, 185), width=1.5))
        self.tl_done = self.tl_plot.plot(pen=pg.mkPen((255, 190, 60), width=3))
        self.tl_cursor = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen((255, 255, 255), width=1.5))
        self.tl_plot.addItem(self.tl_cursor)
        self._beam_regions: list = []
        lay.addWidget(self.tl_plot)
        self.step_label = QtWidgets.QLabel("step —")
        self.step_label.setObjectName("stepLabel")
        lay.addWidget(self.step_label)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(10)
        lay.addWidget(self.progress)

        # --- readouts -----------------------------------------------------
        grid = QtWidgets.QGridLayout()
        grid.setSpacing(4)
        self.r_bias = BigReadout("BIAS (measured)")
        self.r_current = BigReadout("CURRENT")
        self.r_setpoint = BigReadout("SETPOINT")
        self.r_beam = BigReadout("BEAM")
        self.r_dose = BigReadout("DOSE (cumulative)")
        self.r_time = BigReadout("ELAPSED / REMAINING")
        for k, w in enumerate((self.r_bias, self.r_current, self.r_setpoint, self.r_beam, self.r_dose, self.r_time)):
            grid.addWidget(w, k // 2, k % 2)
        lay.addLayout(grid)

        # --- buttons ------------------------------------------------------
        row = QtWidgets.QHBoxLayout()
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setObjectName("startButton")
        self.pause_button = QtWidgets.QPushButton("Pause")
        self.pause_button.setObjectName("pauseButton")
        for b in (self.start_button, self.pause_button):
            b.setMinimumHeight(44)
        row.addWidget(self.start_button)
        row.addWidget(self.pause_button)
        lay.addLayout(row)
        self.abort_button = QtWidgets.QPushButton("ABORT  (ramp to 0 V, output off)")
        self.abort_button.setObjectName("abortButton")
        self.abort_button.setMinimumHeight(64)
        self.abort_button.setToolTip("Ramp to 0 V at the allowed slew and switch the output off (Esc)")
        lay.addWidget(self.abort_button)
        self.start_button.clicked.connect(self.start_clicked)
        self.pause_button.clicked.connect(self.pause_clicked)
        self.abort_button.clicked.connect(self.abort_clicked)

        # --- closed-loop rules (until:, on_seed:) ---------------------------
        self.rules_box = RulesBox()
        self.rules_box.disarm_requested.connect(self.disarm_requested)
        self.rules_box.resume_button.clicked.connect(self.resume_clicked)
        lay.addWidget(self.rules_box)

        # --- event log ----------------------------------------------------
        lay.addWidget(QtWidgets.QLabel("Events"))
        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setObjectName("eventLog")
        self.log.setMinimumHeight(80)
        lay.addWidget(self.log, 1)
        self.set_beam(None)

    # ------------------------------------------------------------------ protocol
    def _browse(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load protocol", "", "Protocol (*.yaml *.yml);;All (*)")
        if path:
            self.load_requested.emit(path)

    def set_protocol(self, protocol, timeline, path: str = "") -> None:
        """Show a validated protocol and its expanded timeline."""
        self.timeline = timeline
        name = getattr(protocol, "name", None) or path or "protocol"
        dur = getattr(timeline, "duration_s", float("nan"))
        peak = getattr(timeline, "peak_abs_V", float("nan"))
        self.name_label.setStyleSheet("")
        lines = [str(name)] + ([path] if path else []) + [
            f"{format_duration(dur)} · peak |V| {peak:.1f} V · {len(getattr(timeline, 'segments', ()))} segments"]
        self.name_label.setText("\n".join(lines))
        lim = getattr(protocol, "limits", None)
        if lim is not None:
            parts = [f"max |V| {lim.max_voltage:g} V", f"compliance {format_current(lim.compliance_current)}",
                     f"slew ≤ {lim.max_slew_rate:g} V/s"]
            if getattr(lim, "short_current", None):
                parts.append(f"short ≥ {format_current(lim.short_current)}")
            if getattr(lim, "frame_stall_s", None):
                parts.append(f"stall {lim.frame_stall_s:g} s")
            self.limits_label.setText("LIMITS  " + " · ".join(parts))
        t, v = self._tl = timeline_curve(timeline)
        self.tl_curve.setData(t, v)
        self.tl_done.setData([], [])
        for r in self._beam_regions:
            self.tl_plot.removeItem(r)
        self._beam_regions = []
        for t0, t1 in beam_on_spans(timeline):   # one shaded region per contiguous beam-on span
            reg = pg.LinearRegionItem((t0, t1), movable=False, brush=pg.mkBrush(90, 160, 255, 40),
                                      pen=pg.mkPen(None))
            self.tl_plot.addItem(reg)
            self._beam_regions.append(reg)
        self.tl_plot.autoRange()
        self.rules_box.set_protocol(protocol, timeline)

    def set_protocol_error(self, message: str) -> None:
        self.name_label.setStyleSheet("color: #ff6b6b")
        self.name_label.setText(f"invalid protocol\n{message}")
        self.limits_label.setText("")

    # ------------------------------------------------------------------ live
    def set_progress(self, rec) -> None:
        """Take a :class:`~insitu.core.records.ProgressRecord`."""
        total = rec.elapsed_s + rec.remaining_s
        self.r_time.set(f"{format_duration(rec.elapsed_s)} / {format_duration(rec.remaining_s)}")
        self.progress.setValue(int(1000 * rec.elapsed_s / total) if total > 0 else 0)
        self.step_label.setText(f"step {rec.step_index + 1}/{rec.n_steps}: {rec.step_label}"
                                + ("   — PAUSED" if rec.paused else ""))
        self.tl_cursor.setPos(rec.elapsed_s)
        k = segment_at(self.timeline, rec.elapsed_s) if self.timeline is not None else -1
        if k >= 0:
            seg = self.timeline.segments[k]
            span = max(seg.t_end_s - seg.t_start_s, 1e-9)
            frac = min(max((rec.elapsed_s - seg.t_start_s) / span, 0.0), 1.0)
            v_now = seg.v_start_V + frac * (seg.v_end_V - seg.v_start_V)
            t, v = self._tl
            n = 2 * k + 1  # finished segments and the start of the running one
            self.tl_done.setData(np.r_[t[:n], min(rec.elapsed_s, seg.t_end_s)], np.r_[v[:n], v_now])

    def set_bias(self, setpoint_V: float, voltage_V: float, current_A: float, compliance: bool = False) -> None:
        self.r_bias.set(f"{voltage_V:+.3f} V")
        self.r_setpoint.set(f"{setpoint_V:+.3f} V")
        self.r_current.set(format_current(current_A) + ("  LIMIT" if compliance else ""),
                           "#ff6b6b" if compliance else None)

    def set_beam(self, blanked: bool | None, dose_rate: float | None = None) -> None:
        if blanked is None:
            self.r_beam.set("unknown", "#8a8fa0")
        elif blanked:
            self.r_beam.set("BLANKED", "#7fd18b")
        else:
            self.r_beam.set("BEAM ON", "#ffb347")
        rate = 0.0 if blanked else (dose_rate or 0.0)
        self.r_dose.caption.setText(f"DOSE (cumulative) · {rate:.3g} e/Å²/s" if blanked is not None
                                    else "DOSE (cumulative)")

    def set_dose(self, dose: float) -> None:
        self.r_dose.set(f"{dose:.4g} e/Å²")

    def set_run_state(self, state: EngineState, *, can_start: bool, source_may_be_on: bool,
                      can_pause: bool = True) -> None:
        """Enable the buttons for ``state`` (an :class:`~insitu.core.records.EngineState`)."""
        S = EngineState
        if state in (S.STOPPING, S.DONE):   # the last progress record may say "paused": no longer true
            self.step_label.setText(self.step_label.text().replace("   — PAUSED", ""))
        self.start_button.setEnabled(can_start)
        self.pause_button.setEnabled(can_pause and state in (S.RUNNING, S.PAUSED))
        self.pause_button.setText("Resume" if state == S.PAUSED else "Pause")
        # Abort stays enabled whenever the output might be on (never greyed out mid-run)
        self.abort_button.setEnabled(source_may_be_on)
        self.load_button.setEnabled(state in (S.IDLE, S.DONE))

    def log_event(self, t_s: float, kind: str, message: str) -> None:
        """One line of the event log; ``kind`` an :class:`~insitu.core.records.EventKind` (its colour).
        A ``trigger`` event also shows in the closed-loop box."""
        if kind == EventKind.TRIGGER:
            self.rules_box.fired(t_s, message)
        colour = _EVENT_COLOURS.get(kind, "#c8ccd8")
        stamp = time.strftime("%H:%M:%S")
        self.log.appendHtml(f"<span style='color:#8a8fa0'>{stamp}  t={t_s:8.1f} s</span> "
                            f"<span style='color:{colour}'><b>{kind}</b></span> {_escape(message)}")


def protocol_rules(protocol, timeline) -> list[str]:
    """The closed-loop rules a protocol arms, in words (empty for a fixed timeline).

    Examples
    --------
    >>> from insitu.control.protocol import expand, parse_protocol
    >>> p = parse_protocol('''
    ... limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}
    ... on_seed: blank
    ... steps: [{hold: {duration: 60, until: {seeds: 1}}}]''')
    >>> protocol_rules(p, expand(p))
    ['on_seed: blank', 'step 1 (hold 60 s at 0 V): until seeds >= 1']
    """
    out = []
    on_seed = getattr(protocol, "on_seed", "none")
    if on_seed != "none":
        out.append(f"on_seed: {on_seed}")
    for seg in getattr(timeline, "segments", ()):
        if getattr(seg, "condition", ""):
            out.append(f"step {seg.step_index + 1} ({seg.label}): {seg.condition}")
    return out


class RulesBox(QtWidgets.QGroupBox):
    """Closed-loop rules: which are armed now, the moment one fired, Disarm and Resume buttons.

    Hidden for a protocol without ``until:``/``on_seed:``.
    """

    disarm_requested = QtCore.pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__("Closed loop", parent)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        self.armed_label = QtWidgets.QLabel("")
        self.armed_label.setTextFormat(QtCore.Qt.PlainText)   # rule texts come from the file
        self.armed_label.setWordWrap(True)
        self.fired_label = QtWidgets.QLabel("nothing fired yet")
        self.fired_label.setTextFormat(QtCore.Qt.PlainText)
        self.fired_label.setWordWrap(True)
        self.fired_label.setObjectName("ruleFired")
        lay.addWidget(self.armed_label)
        lay.addWidget(self.fired_label)
        row = QtWidgets.QHBoxLayout()
        self.disarm_seed_button = QtWidgets.QPushButton("Disarm on_seed")
        self.disarm_until_button = QtWidgets.QPushButton("Disarm until (this step)")
        self.resume_button = QtWidgets.QPushButton("Resume (on_seed hold)")
        for b in (self.disarm_seed_button, self.disarm_until_button, self.resume_button):
            b.setEnabled(False)
            row.addWidget(b)
        lay.addLayout(row)
        self.disarm_seed_button.clicked.connect(lambda: self.disarm_requested.emit("on_seed"))
        self.disarm_until_button.clicked.connect(lambda: self.disarm_requested.emit("until"))
        self.n_fired = 0
        self.setVisible(False)

    def set_protocol(self, protocol, timeline) -> None:
        rules = protocol_rules(protocol, timeline)
        self.setVisible(bool(rules))
        self.armed_label.setText("rules: " + "; ".join(rules) if rules else "")
        self.fired_label.setText("nothing fired yet")
        self.fired_label.setStyleSheet("")
        self.n_fired = 0

    def set_armed(self, armed: dict, held: bool = False) -> None:
        """The rules armed now (``Engine.armed()``) and whether an on_seed hold waits for the operator."""
        parts = [f"on_seed: {armed['on_seed']}"] if "on_seed" in armed else []
        if "until" in armed:
            parts.append(f"this step: {armed['until']}")
        self.armed_label.setText("ARMED  " + ("; ".join(parts) if parts else "nothing"))
        self.disarm_seed_button.setEnabled("on_seed" in armed)
        self.disarm_until_button.setEnabled("until" in armed)
        self.resume_button.setEnabled(bool(held))

    def fired(self, t_s: float, message: str) -> None:
        """A ``trigger`` event: shown with its time, highlighted."""
        self.n_fired += 1
        self.fired_label.setText(f"FIRED at t = {t_s:.1f} s: {message}")
        self.fired_label.setStyleSheet("color: #c58bff; font-weight: 700")


#: event-log colours: red for stops and faults, amber for what holds or limits the run
_EVENT_COLOURS = {EventKind.ABORT: "#ff6b6b", EventKind.FAULT: "#ff6b6b", EventKind.SHORT: "#ff6b6b",
                  EventKind.SUSPENDER: "#ffb347", EventKind.COMPLIANCE: "#ffb347", EventKind.STALL: "#ffb347",
                  EventKind.TRIGGER: "#c58bff", EventKind.SEED: "#7fd1d1"}


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
