"""The operator's main window and the Qt application around it.

Layout: live image (top left), bias/current plots (bottom left), protocol
panel with readouts, Start / Pause / Abort and the event log (right), status
bar (bottom). The record producer (engine, replay player or synthetic feed)
runs in a :class:`~insitu.gui.worker.SourceThread`; a 20 Hz ``QTimer`` drains
its :class:`~insitu.gui.worker.RecordQueue`.
"""
from __future__ import annotations

import logging
import signal
import sys
import time

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from insitu.core.records import BeamSample, BiasSample, EngineState, EventKind, EventRecord, ProgressRecord

from .image_view import LiveImageView
from .plots import TracePlots
from .protocol_panel import ProtocolPanel
from .status import RateMeter, StatusBar, SyncTracker
from insitu.core.units import format_duration
from .worker import FrameInfo, LatestSlot, RecordQueue, SourceThread

log = logging.getLogger(__name__)

BACKGROUND = "#14161b"
PLOT_BACKGROUND = "#0d0f13"
FOREGROUND = "#d5d8e0"

STYLE = f"""
QWidget {{ background: {BACKGROUND}; color: {FOREGROUND}; font-size: 11pt; }}
QToolTip {{ background: #262a33; color: {FOREGROUND}; border: 1px solid #3a3f4b; }}
QLabel#header {{ font-size: 15pt; font-weight: 600; padding: 4px 8px; border-radius: 4px; background: #1d2027; }}
QLabel#protocolName {{ font-size: 11pt; }}
QLabel#limits {{ color: #ffcf7a; font-size: 10pt; }}
QLabel#stepLabel {{ font-size: 12pt; font-weight: 600; color: #ffffff; }}
QLabel#imageInfo {{ font-family: "DejaVu Sans Mono", monospace; font-size: 11pt; color: #e8eaf0; }}
QFrame#readout {{ background: #1b1e25; border: 1px solid #2a2e38; border-radius: 5px; }}
QLabel#readoutCaption {{ color: #8a8fa0; font-size: 9pt; background: transparent; }}
QLabel#readoutValue {{ font-family: "DejaVu Sans Mono", monospace; font-size: 20pt; font-weight: 700;
                      color: #ffffff; background: transparent; }}
QPushButton {{ background: #262a33; border: 1px solid #3a3f4b; border-radius: 5px; padding: 6px 12px; }}
QPushButton:hover {{ background: #2f3440; }}
QPushButton:disabled {{ color: #5c606b; background: #1b1e25; }}
QPushButton#startButton {{ background: #1f5f2a; font-size: 14pt; font-weight: 700; }}
QPushButton#startButton:disabled {{ background: #1b1e25; }}
QPushButton#pauseButton {{ font-size: 14pt; font-weight: 700; }}
QPushButton#abortButton {{ background: #c62828; color: #ffffff; font-size: 17pt; font-weight: 800;
                          border: 2px solid #ff6b6b; border-radius: 8px; }}
QPushButton#abortButton:hover {{ background: #e53935; }}
QPushButton#abortButton:disabled {{ background: #3a2326; color: #8d6f72; border: 1px solid #4d2f33; }}
QPlainTextEdit#eventLog {{ background: #0f1115; font-family: "DejaVu Sans Mono", monospace; font-size: 9pt; }}
QComboBox, QDoubleSpinBox {{ background: #1f2229; border: 1px solid #3a3f4b; padding: 2px 6px; }}
QProgressBar {{ background: #1f2229; border: none; border-radius: 3px; }}
QProgressBar::chunk {{ background: #ffb347; border-radius: 3px; }}
QStatusBar {{ background: #0f1115; }}
QLabel#statusField {{ color: #aab0bf; font-size: 9pt; padding: 0 8px; background: #0f1115; }}
QSplitter::handle {{ background: #22252d; }}
"""


def apply_dark_theme(app: QtWidgets.QApplication) -> None:
    """Fusion style, a dark palette and the stylesheet above (dark-room friendly)."""
    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    c = QtGui.QColor
    for role, col in ((QtGui.QPalette.Window, BACKGROUND), (QtGui.QPalette.WindowText, FOREGROUND),
                      (QtGui.QPalette.Base, "#0f1115"), (QtGui.QPalette.AlternateBase, "#1b1e25"),
                      (QtGui.QPalette.Text, FOREGROUND), (QtGui.QPalette.Button, "#262a33"),
                      (QtGui.QPalette.ButtonText, FOREGROUND), (QtGui.QPalette.Highlight, "#ffb347"),
                      (QtGui.QPalette.HighlightedText, "#000000"), (QtGui.QPalette.ToolTipBase, "#262a33"),
                      (QtGui.QPalette.ToolTipText, FOREGROUND)):
        pal.setColor(role, c(col))
    app.setPalette(pal)
    app.setStyleSheet(STYLE)


pg.setConfigOptions(background=PLOT_BACKGROUND, foreground=FOREGROUND, antialias=False)


class MainWindow(QtWidgets.QMainWindow):
    """The operator window around one backend (engine, replay or synthetic feed).

    Parameters
    ----------
    backend : insitu.gui.backends backend
    protocol, timeline : shown in the protocol panel (optional)
    protocol_path : str
    analysis : bool
        Run the live analysis (differential/registered views, seeds).
    tick_ms : int
        Period of the queue-draining timer.
    """

    state_changed = QtCore.pyqtSignal(str)

    def __init__(self, backend, *, protocol=None, timeline=None, protocol_path: str = "",
                 analysis: bool = True, tick_ms: int = 25):
        super().__init__()
        self.backend = backend
        self.protocol = protocol
        self.timeline = timeline
        self.queue = RecordQueue()
        self.thread: SourceThread | None = None
        self.state = EngineState.IDLE
        self._closing = False
        self._outcome_shown = False
        self.analysis = None
        self.analysis_enabled = analysis
        #: replaces the "abort and close?" dialog (tests): callable returning True to go ahead
        self.confirm_close = None
        self.in_rate = RateMeter()
        self.shown_rate = RateMeter()
        self.frames_shown = 0
        self.sync = SyncTracker()
        self.last_record_time = 0.0
        self.dose = 0.0
        self._got_progress = False
        self._t_start_event = None       # time of the first "start" event (protocol time 0)
        self._step_event: EventRecord | None = None   # the last step event (step index, count, label as fields)
        self._held = False               # the engine holds on its own (e.g. frame stall)
        self._tick_count = 0
        # redraw budget: the GUI thread shares the interpreter lock with the engine thread
        self._plot_every = max(1, round(250 / tick_ms))      # plots redrawn at ~4 Hz
        self._panel_every = max(1, round(200 / tick_ms))     # readouts and progress at ~5 Hz
        self._status_every = max(1, round(1000 / tick_ms))   # status bar at ~1 Hz
        self._pending_bias = None
        self._pending_prog = None
        self._pending_dose = False

        self.setWindowTitle(f"insitu — {self._mode_name()}")
        self.image = LiveImageView()
        self.plots = TracePlots()
        self.panel = ProtocolPanel()
        self.status = StatusBar()
        self.setStatusBar(self.status)

        self.header = QtWidgets.QLabel()
        self.header.setObjectName("header")
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(4, 4, 4, 0)
        rl.addWidget(self.header)
        if backend.can_change_speed:
            row = QtWidgets.QHBoxLayout()
            row.addWidget(QtWidgets.QLabel("Replay speed"))
            self.speed_box = QtWidgets.QComboBox()
            for s in (0.5, 1, 2, 5, 10, 30, 100):
                self.speed_box.addItem(f"{s:g}×", s)
            idx = self.speed_box.findData(float(getattr(backend, "speed", 1.0)))
            if idx < 0:
                self.speed_box.addItem(f"{backend.speed:g}×", float(backend.speed))
                idx = self.speed_box.count() - 1
            self.speed_box.setCurrentIndex(idx)
            self.speed_box.currentIndexChanged.connect(
                lambda i: self.backend.set_speed(float(self.speed_box.itemData(i))))
            row.addWidget(self.speed_box)
            row.addStretch(1)
            rl.addLayout(row)
        rl.addWidget(self.panel, 1)
        right.setMinimumWidth(430)
        right.setMaximumWidth(560)

        left = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        left.addWidget(self.image)
        left.addWidget(self.plots)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 2)
        left.setSizes([600, 330])
        main = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        main.addWidget(left)
        main.addWidget(right)
        main.setStretchFactor(0, 1)
        main.setStretchFactor(1, 0)
        self.setCentralWidget(main)
        self.resize(1600, 1000)

        self.panel.start_clicked.connect(self.start)
        self.panel.pause_clicked.connect(self.toggle_pause)
        self.panel.disarm_requested.connect(self.backend.disarm)
        self.panel.resume_clicked.connect(self.backend.resume)
        self.panel.abort_clicked.connect(self.abort)
        self.panel.load_requested.connect(self.load_protocol)
        if protocol is not None and timeline is not None:
            self.panel.set_protocol(protocol, timeline, protocol_path)
        if backend.start_text:
            self.panel.start_button.setText(backend.start_text)
        if backend.abort_text:
            self.panel.abort_button.setText(backend.abort_text)
        self.status.set_instruments(backend.identities)
        self.status.set_session(backend.session_path, backend.session_label)

        self._overlay_loader = None
        self._overlay_state = "none"     # none | loading | done | failed
        self.image.overlay_requested = self._request_overlays

        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(tick_ms)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self._update_buttons()

    # ------------------------------------------------------------------ helpers
    def _mode_name(self) -> str:
        return self.backend.mode_name

    def _update_buttons(self) -> None:
        b = self.backend
        S = EngineState
        can_start = (self.state == S.IDLE or (self.state == S.DONE and b.can_renew)) and \
            (not b.needs_protocol or self.protocol is not None)
        may_be_on = self.state in (S.RUNNING, S.PAUSED, S.STOPPING)
        self.panel.set_run_state(self.state, can_start=can_start, source_may_be_on=may_be_on,
                                 can_pause=b.can_pause)
        if b.can_renew:   # after a run: Retry (it failed) or New run, into the next free file name
            outcome = self.thread.outcome if (self.state == S.DONE and self.thread is not None) else None
            self.panel.start_button.setText({None: "Start", "complete": "New run"}.get(outcome, "Retry"))
        colours = {S.IDLE: "#8a8fa0", S.RUNNING: "#7fd18b", S.PAUSED: "#ffcf7a", S.STOPPING: "#ff6b6b",
                   S.DONE: "#8a8fa0"}
        text = {S.IDLE: "READY", S.RUNNING: "RUNNING", S.PAUSED: "PAUSED", S.STOPPING: "STOPPING — ramping to 0 V",
                S.DONE: "FINISHED"}[self.state]
        if self.state == S.DONE and self.thread is not None and self.thread.outcome:
            text = f"FINISHED: {self.thread.outcome.upper()}"
        if not b.drives_source and self.state == S.STOPPING:
            text = "STOPPING"             # nothing to ramp down
        if self.state == S.RUNNING and self._held:
            text, colours = "RUNNING — HOLDING (protocol clock paused)", {**colours, S.RUNNING: "#ffcf7a"}
        self.header.setText(f"<span style='color:{colours[self.state]}'>● {text}</span>"
                            f"<span style='color:#8a8fa0; font-size:10pt'>   {self._mode_name()}</span>")

    def _set_state(self, state: EngineState) -> None:
        if state != self.state:
            self.state = EngineState(state)
            self._update_buttons()
            self.state_changed.emit(self.state.value)

    # ------------------------------------------------------------------ actions
    def load_protocol(self, path: str) -> bool:
        """Load and validate a protocol file into the panel (engine mode, before Start)."""
        if self.state != EngineState.IDLE:
            return False
        try:
            from insitu.core.errors import InsituError
            from insitu.control.protocol import expand, load_protocol

            protocol = load_protocol(path)
            timeline = expand(protocol, getattr(self.backend, "probe_current_A", 5e-11),
                              frame_rate_hz=getattr(self.backend, "frame_rate_hz", 1.0))
        except InsituError as exc:
            self.panel.set_protocol_error(str(exc))
            self.panel.log_event(0.0, EventKind.INFO, f"protocol rejected: {exc}")
            return False
        self.protocol, self.timeline = protocol, timeline
        if hasattr(self.backend, "protocol"):
            self.backend.protocol = protocol
        self.panel.set_protocol(protocol, timeline, path)
        self._update_buttons()
        return True

    def start(self) -> None:
        """Start the run (engine), the replay, or the feed, in the worker thread.

        After an engine run has ended (say, a connection fault), Start offers a
        new run into the next free session name (``run-2.h5``) on fresh connections.
        """
        if self.state == EngineState.DONE and self.backend.renew():
            self._reset_for_new_run()
        if self.state != EngineState.IDLE:
            return
        if self.analysis_enabled and self.analysis is None:
            try:
                from .analysis_thread import AnalysisThread

                slot = LatestSlot()
                self.analysis = AnalysisThread(slot)
                self.queue.frame_slots.append(slot)
                self.analysis.start()
            except Exception as exc:  # analysis is a convenience: never block the run
                self.analysis = None
                self.panel.log_event(0.0, EventKind.INFO, f"live analysis unavailable: {exc}")
                self.image.mode_box.model().item(1).setEnabled(False)
        # a closed-loop run analyses every frame in its seed watcher: the view shows that analysis
        self.backend.on_seed_watcher = self.analysis.follow if self.analysis is not None else None
        sinks = (self.queue,)
        b = self.backend
        self.thread = SourceThread(lambda: b.run(sinks), b.stop, finish=b.finish, name=b.label)
        self.thread.start()
        self._set_state(EngineState.RUNNING)

    def _reset_for_new_run(self) -> None:
        """Forget the last run's records (plots, progress, dose) before the next one."""
        if self.thread is not None and self.thread.is_alive():
            return
        self.queue = RecordQueue()
        self.sync = SyncTracker()
        if self.analysis is not None:
            self.analysis.stop()
        self.analysis = None
        self.plots.clear()
        self.last_record_time = self.dose = 0.0
        self._got_progress = self._outcome_shown = self._held = False
        self._t_start_event = self._step_event = None
        self._pending_bias = self._pending_prog = None
        self.status.set_session(self.backend.session_path, self.backend.session_label)
        self.status.set_instruments(self.backend.identities)
        self.panel.log_event(0.0, EventKind.INFO, f"new run into {self.backend.session_path}")
        self.state = EngineState.IDLE

    def toggle_pause(self) -> None:
        if self.state == EngineState.RUNNING:
            self.backend.pause()
            self._set_state(EngineState.PAUSED)
        elif self.state == EngineState.PAUSED:
            self.backend.resume()
            self._set_state(EngineState.RUNNING)

    def abort(self, reason: str = "operator") -> None:
        """Ramp to 0 V and switch the output off (engine), or stop the replay. Returns at once."""
        if self.thread is None or not self.thread.is_alive():
            return
        self.thread.request_stop(reason)
        if self.state in (EngineState.RUNNING, EngineState.PAUSED):
            self.panel.log_event(self.last_record_time, EventKind.ABORT, f"abort requested ({reason})")
            self._set_state(EngineState.STOPPING)

    # ------------------------------------------------------------------ draining
    def _tick(self) -> None:
        try:
            self._drain()
        except Exception:  # a display bug must not stop the timer
            log.exception("insitu gui: display error (the run continues)")

    def _drain(self) -> None:
        self._tick_count += 1
        recs = self.queue.drain(limit=50_000)
        bt, bs, bv, bi = [], [], [], []
        last_bias = None
        last_prog = None
        n_frames = 0
        for r in recs:
            if isinstance(r, BiasSample):
                bt.append(r.time_s)
                bs.append(r.setpoint_V)
                bv.append(r.voltage_V)
                bi.append(r.current_A)
                self.sync.add_bias(r.time_s, r.voltage_V)
                last_bias = r
            elif isinstance(r, FrameInfo):
                n_frames += 1
                self.sync.add_frame(r.time_s, r.bias_V)
                self.dose = r.dose
                self.last_record_time = max(self.last_record_time, r.time_s)
            elif isinstance(r, ProgressRecord):
                last_prog = r
            elif isinstance(r, BeamSample):
                self.panel.set_beam(r.blanked, r.dose_rate)
            elif isinstance(r, EventRecord):
                if r.kind == EventKind.START and self._t_start_event is None:
                    self._t_start_event = r.time_s
                elif r.step_index is not None:
                    self._step_event = r
                self.panel.log_event(r.time_s, r.kind, r.message)
                if r.kind != EventKind.INFO:
                    self.plots.add_marker(r.time_s, r.kind, r.message)
        if bt:
            self.plots.add_samples(bt, bs, bv, bi)
            self._pending_bias = last_bias
            self.last_record_time = max(self.last_record_time, bt[-1])
        if n_frames:
            self.in_rate.tick(n_frames)
            self._pending_dose = True
        if last_prog is not None and self.backend.progress_records:  # else: progress from the record times
            self._got_progress = True
            self._pending_prog = last_prog

        frame = self.queue.frames.take()
        if frame is not None:
            self.image.show_frame(frame)
            self.shown_rate.tick()
            self.frames_shown += 1
            self.dose = frame.dose
            self._pending_dose = True
        if self.analysis is not None:
            res = self.analysis.results.take()
            if res is not None:
                self.image.show_analysis(res)
            for t, seed in self.analysis.pop_new_seeds():
                t0 = getattr(seed, "first_time_s", t)
                self.plots.add_marker(float(t0), "seed", f"seed {getattr(seed, 'id', '')}")

        if self._tick_count % self._panel_every == 0:
            self._update_panel()
        if self._tick_count % self._plot_every == 0:
            self.plots.refresh()
        if self._tick_count % self._status_every == 0:
            self._update_status()
        if self._tick_count % self._plot_every == 0:
            self._poll_overlays()

        th = self.thread
        if th is not None and th.outcome is not None and not th.is_alive() and not self._outcome_shown:
            self._outcome_shown = True
            if self.queue:  # pick up the very last records first
                self._drain()
            self._update_panel()
            self.plots.refresh()
            msg = f"{th.label} ended: {th.outcome}" + (f" — {th.message}" if th.message else "")
            self.panel.log_event(self.last_record_time,
                                 EventKind.END if th.outcome == "complete" else EventKind.ABORT, msg)
            self._set_state(EngineState.DONE)
            self._update_status()
            if self.analysis is not None:
                self.analysis.finish()     # a closed-loop run's watcher may still be analysing its last frames
            if self._closing:
                self.close()

    def _update_panel(self) -> None:
        """Apply the newest readouts and progress (throttled: numbers change faster than eyes read)."""
        b = self._pending_bias
        if b is not None:
            self._pending_bias = None
            self.panel.set_bias(b.setpoint_V, b.voltage_V, b.current_A, b.compliance)
        if self._pending_dose:
            self._pending_dose = False
            self.panel.set_dose(self.dose)
        p = self._pending_prog
        if p is not None:
            self._pending_prog = None
            self.panel.set_progress(p)
            self.status.set_lost_frames(p.frames_dropped)
            if self.panel.rules_box.isVisible():
                self.panel.rules_box.set_armed(self.backend.armed(), self.backend.held)
            held = bool(p.paused) and self.state == EngineState.RUNNING
            if held != self._held:
                self._held = held
                self._update_buttons()
        elif not self._got_progress and self.state in (EngineState.RUNNING, EngineState.PAUSED,
                                                       EngineState.STOPPING) and self.last_record_time:
            self._synth_progress()

    def _synth_progress(self) -> None:
        """Progress from record times when the source sends no usable ProgressRecord (replay).

        Protocol time counts from the recorded ``start`` event (the engine's
        protocol start), falling back to the first record.
        """
        dur = float(getattr(self.backend, "duration_s", float("nan")))
        t_first = float(getattr(self.backend, "t_first", 0.0))
        t = self.last_record_time
        t0 = self._t_start_event if self._t_start_event is not None else t_first
        tp = max(t - t0, 0.0)
        rem = t_first + dur - t if np.isfinite(dur) else float("nan")
        label, k, n = "", 0, 1
        segs = getattr(self.timeline, "segments", ()) if self.timeline is not None else ()
        if self._step_event is not None:
            # the recorded step events say where the run really was (it may lag the plan)
            ev = self._step_event
            t_ev, k, n, label = ev.time_s, ev.step_index, ev.n_steps or 1, ev.step_label
            mine = [sg for sg in segs if getattr(sg, "step_index", -1) == k]
            if mine:
                tp = min(mine[0].t_start_s + (t - t_ev), mine[-1].t_end_s)
        elif segs:
            from .protocol_panel import segment_at

            labels = getattr(self.timeline, "labels", ()) or ()
            n = max(len(labels), len(segs), 1)
            j = segment_at(self.timeline, tp)
            if j >= 0:
                label, k = segs[j].label, int(getattr(segs[j], "step_index", j))
        self.panel.set_progress(ProgressRecord(t, k, n, label or "replay", tp,
                                               max(rem, 0.0) if np.isfinite(rem) else 0.0))
        if not np.isfinite(rem):
            self.panel.r_time.set(f"{format_duration(tp)} / —")

    # ------------------------------------------------------------------ overlays
    def _overlay_source(self):
        """A callable giving (microstructure, gb_table or None, note), or None when not available (yet)."""
        return self.backend.overlay_source()

    def _request_overlays(self) -> None:
        if self._overlay_state in ("loading", "done", "failed"):
            return
        src = self._overlay_source()
        if src is None:
            if self.state == EngineState.IDLE and self.backend.can_renew:   # its instruments open on Start
                if not getattr(self, "_overlay_hint", False):
                    self._overlay_hint = True
                    self.panel.log_event(0.0, EventKind.INFO, "overlays appear once the run has started")
            else:
                self._overlay_state = "failed"
                self.panel.log_event(self.last_record_time, EventKind.INFO, "no microstructure: GB/electrode overlays "
                                                                    "are not available for this source")
            return
        from .overlays import OverlayLoader

        self._overlay_state = "loading"
        self._overlay_loader = OverlayLoader(src)
        self._overlay_loader.start()

    def _poll_overlays(self) -> None:
        ld = self._overlay_loader
        if ld is not None and not ld.is_alive():
            self._overlay_loader = None
            if ld.result is not None:
                self.image.set_overlay(ld.result)
                self._overlay_state = "done"
            else:
                self._overlay_state = "failed"
                self.panel.log_event(self.last_record_time, EventKind.INFO, f"overlays not available: {ld.error}")
        elif self._overlay_state == "none" and (self.image.gb_box.isChecked() or self.image.el_box.isChecked()) \
                and self._overlay_source() is not None:
            self._request_overlays()

    def _update_status(self) -> None:
        self.status.set_instruments(self.backend.identities)
        self.status.update_session_size()
        dropped = self.queue.frames.n_dropped
        self.status.set_rates(self.in_rate.rate(), self.shown_rate.rate(), dropped)
        self.status.set_sync(*self.sync.worst())

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        th = self.thread
        if th is None or not th.is_alive():
            self.timer.stop()
            if self.analysis is not None:
                self.analysis.stop()
            event.accept()
            return
        if self._closing:  # already stopping: keep waiting for the safe end
            event.ignore()
            return
        if self.backend.drives_source:
            ask = self.confirm_close or self._ask_close
            if not ask():
                event.ignore()
                return
            self.panel.log_event(self.last_record_time, EventKind.ABORT, "window closing: stopping safely first")
        self._closing = True
        self.abort("window closed")
        event.ignore()  # closed from _drain once the worker has finished

    def _ask_close(self) -> bool:
        r = QtWidgets.QMessageBox.question(
            self, "Run in progress",
            "A run is in progress.\n\nAbort it (ramp to 0 V, output off) and close the window?",
            QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No, QtWidgets.QMessageBox.No)
        return r == QtWidgets.QMessageBox.Yes

    def shutdown(self, timeout_s: float = 120.0) -> str | None:
        """Stop the worker safely and wait for it (used when the application quits)."""
        th = self.thread
        if th is not None and th.is_alive():
            th.request_stop("application exit")
            th.join(timeout_s)
        if self.analysis is not None:
            self.analysis.stop()
        return None if th is None else th.outcome


def install_excepthook() -> None:
    """Print unexpected GUI exceptions instead of letting PyQt abort the process.

    PyQt5 calls ``qFatal`` (killing the process, engine thread included) on an
    unhandled exception in a slot unless ``sys.excepthook`` is replaced; the
    engine must always get to ramp down, so we replace it.
    """
    def hook(etype, value, tb):
        log.error("insitu gui: unexpected error (the run continues)", exc_info=(etype, value, tb))

    sys.excepthook = hook


#: the GUI-thread garbage collector of :func:`make_app` (one per process)
_COLLECTOR = None


def collect_garbage_in_gui_thread(interval_s: float = 1.0):
    """Turn Python's automatic garbage collection off and collect on a timer in the GUI thread
    instead (pyqtgraph's ``GarbageCollector``); returns it (``.timer.stop()`` and ``gc.enable()``
    undo it).

    The cycle collector runs in whichever thread happens to allocate when a threshold is passed:
    here the engine, the analysis or the seed-watcher thread. Qt objects in a reference cycle
    (plot items, windows) are then deleted from that thread, and Qt crashes: in the tests,
    "wrapped C/C++ object of type AxisItem has been deleted" and a segmentation fault, which
    in a run would take the engine thread (and its safe ramp-down) with it.
    """
    from pyqtgraph.util.garbage_collector import GarbageCollector

    return GarbageCollector(interval=interval_s)


def make_app(argv=None) -> QtWidgets.QApplication:
    """The QApplication (created once), themed; garbage collected in the GUI thread only
    (:func:`collect_garbage_in_gui_thread`)."""
    global _COLLECTOR
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(list(argv or sys.argv[:1]))
    apply_dark_theme(app)
    install_excepthook()
    if _COLLECTOR is None:
        _COLLECTOR = collect_garbage_in_gui_thread()
    # the engine thread must get the interpreter lock quickly while the GUI thread draws:
    # a 1 ms switch interval (default 5 ms) keeps its sample timing tight
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
    return app


def save_screenshot(window: QtWidgets.QWidget, path: str) -> tuple[int, int]:
    """Render ``window`` to a PNG at ``path``; returns (width, height) in pixels."""
    pix = window.grab()
    if not pix.save(str(path), "PNG"):
        from insitu.core.errors import UserError

        raise UserError(f"{path}: cannot write the screenshot")
    return pix.width(), pix.height()


#: longest wait (s) for the first frame before a timed screenshot is taken anyway
FIRST_FRAME_WAIT_S = 60.0


def run_window(window: MainWindow, *, autostart: bool = False, screenshot: str | None = None,
               duration_s: float | None = None, stop_timeout_s: float = 120.0) -> int:
    """Show ``window`` and run the event loop.

    With ``duration_s``: after that many seconds take the screenshot (if
    asked; while a run is on and no frame has been shown yet, it waits up to
    another ``max(duration_s, FIRST_FRAME_WAIT_S)`` for the first one: on a
    loaded machine building the virtual specimen alone can take longer than a
    short ``duration_s``), stop the run safely, and quit. Returns the worker's exit code
    convention: 0 (complete, or stopped by us for the screenshot), 2 fault, 3 aborted.
    """
    app = QtWidgets.QApplication.instance()
    window.show()
    stopped_by_us = {"v": False}
    if autostart:
        QtCore.QTimer.singleShot(0, window.start)

    deadline = {"t": None}

    def finish_timed():
        if screenshot and window.frames_shown == 0 and window.thread is not None and window.thread.is_alive():
            # a busy machine may still be building the specimen or scanning the first frame:
            # wait for it (up to another duration_s), a screenshot without an image documents nothing
            now = time.monotonic()
            if deadline["t"] is None:
                deadline["t"] = now + max(duration_s, FIRST_FRAME_WAIT_S)
            if now < deadline["t"]:
                QtCore.QTimer.singleShot(250, finish_timed)
                return
        if screenshot:
            window._drain()
            window.plots.refresh()
            save_screenshot(window, screenshot)
        stopped_by_us["v"] = True
        if window.thread is not None and window.thread.is_alive():
            window._closing = True
            window.abort("timed run ended")
        else:
            window.close()

    if duration_s is not None:
        QtCore.QTimer.singleShot(int(duration_s * 1000), finish_timed)

    def on_signal(signum, frame):
        # Ctrl-C / SIGTERM: stop safely (ramp to 0 V, output off), then close; runs between timer ticks
        name = signal.Signals(signum).name
        if window.thread is not None and window.thread.is_alive():
            sys.stderr.write(f"insitu gui: {name}: stopping safely - ramping to 0 V and switching the output off\n")
            window._closing = True
            window.abort(name)
        else:
            window.close()

    old_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (tests): leave signals alone
            pass
    app.aboutToQuit.connect(lambda: window.shutdown(stop_timeout_s))
    try:
        app.exec_()
    finally:
        window.shutdown(stop_timeout_s)   # never leave the engine running unattended
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    th = window.thread
    if th is None or th.outcome in (None, "complete", "stopped"):
        return 0
    if th.outcome == "aborted":
        return 0 if stopped_by_us["v"] else 3
    return 2
