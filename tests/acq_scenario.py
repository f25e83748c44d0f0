"""The acquisition scenario of issue 17, shared by ``tests/test_acq_timing.py`` and ``bench/bench_control.py``.

The real engine drives the REAL Keithley 2450 driver against the strict SCPI
emulator (``scpi_emulator.py``, loopback TCP) at a 0.1-s sample interval,
with the beam unblanked, a :class:`~insitu.drivers.folder.FolderWatchSource`
watching a folder and a :class:`~insitu.core.session.SessionWriter` recording.
A feeder thread copies large TIFFs (4096² uint16, 32 MB) into the watched
folder at a fixed period, as the microscope software would export them.

The evidence is instrument-side: the emulator logs the arrival time
(``time.monotonic()``) of every ``:READ?`` query, one per engine tick. The
tick-interval deviation is ``|Δt - sample_interval|`` over the hold.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

DT_S = 0.1

PROTOCOL = """
name: acq-folder-timing
limits: {{max_voltage: 2.0, compliance_current: 1.0e-6, max_slew_rate: 1.0}}
sample_interval: {dt}
steps:
  - beam: unblank
  - ramp: {{to: 0.5}}
  - hold: {{duration: {hold}}}
  - beam: blank
"""


FEEDER = r"""
import shutil, sys, time
from pathlib import Path
watch, lead, period, files = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
if sys.stdin.readline().strip() != "go":
    sys.exit(0)
t0 = time.monotonic()
for k, f in enumerate(files):
    time.sleep(max(0.0, t0 + lead + k * period - time.monotonic()))
    tmp = watch / f"frame_{k:03d}.tif.tmp"
    shutil.copyfile(f, tmp)
    tmp.rename(watch / f"frame_{k:03d}.tif")
"""


def make_tiffs(folder: Path, n: int, shape=(4096, 4096)) -> list[Path]:
    """``n`` distinct uint16 TIFFs in ``folder``: frame k has row 0 filled with k (a marker) over one noise image."""
    import tifffile

    rng = np.random.default_rng(0)
    base = rng.integers(0, 4000, shape, dtype=np.uint16)
    out = []
    for k in range(n):
        base[0, :] = k
        p = folder / f"stage_{k:03d}.tif"
        tifffile.imwrite(p, base)
        out.append(p)
    return out


def read_intervals(emu, t_from: float, t_to: float) -> np.ndarray:
    """Intervals (s) between consecutive ``:READ?`` queries the emulator received in [t_from, t_to] (monotonic)."""
    t = np.array([ts for ts, msg in list(emu.log) if msg.upper().startswith(":READ?") and t_from <= ts <= t_to])
    return np.diff(t)


def run(tmp: Path, *, n_frames: int, period_s: float = 1.5, shape=(4096, 4096), dt: float = DT_S,
        lead_s: float = 1.0, tail_s: float = 1.5) -> dict:
    """One run; frames (``n_frames`` TIFFs every ``period_s``, 0 for none) during a hold long enough for all.

    Returns the tick-interval statistics over the hold (ms), the frames delivered and recorded, and
    whether each recorded frame is the file it came from (row-0 marker).
    """
    from scpi_emulator import Emulator2450

    from insitu.control.engine import Engine
    from insitu.control.protocol import parse_protocol
    from insitu.core.clock import Clock
    from insitu.core.session import SessionWriter, open_session
    from insitu.drivers.folder import FolderWatchSource
    from insitu.drivers.interfaces import Instruments
    from insitu.drivers.keithley import Keithley2450
    from insitu.drivers.mock import MockBeamBlanker

    stage, watch = tmp / "stage", tmp / "watch"
    stage.mkdir()
    watch.mkdir()
    files = make_tiffs(stage, n_frames, shape) if n_frames else []
    hold = lead_s + n_frames * period_s + tail_s if n_frames else lead_s + 10 * period_s + tail_s
    proto = parse_protocol(PROTOCOL.format(dt=dt, hold=hold))
    emu = Emulator2450(resistance_ohm=50e6)
    emu.start()
    clock = Clock()
    sm = Keithley2450.connect(emu.resource, clock=clock, timeout_s=2.0)
    bl = MockBeamBlanker()
    src = FolderWatchSource(watch, clock, settle_s=0.3)
    inst = Instruments(sm, bl, src, clock)
    writer = SessionWriter(tmp / "run.h5", start_time_iso=clock.start_iso, protocol_text=proto.text)
    eng = Engine(proto, inst, [writer])
    # the microscope: another process (as on a real set-up, where another machine writes the files);
    # it copies one file every period_s once told to start, under a temporary name then renamed
    feeder = subprocess.Popen([sys.executable, "-c", FEEDER, str(watch), str(lead_s), str(period_s)]
                              + [str(f) for f in files], stdin=subprocess.PIPE, text=True)
    hold_window: list[float] = []
    stop_watch = threading.Event()

    def start_feeder_at_hold():
        while not stop_watch.is_set() and not (eng._step_label.startswith("hold") and eng.setpoint == 0.5):
            time.sleep(0.01)
        hold_window.append(time.monotonic())
        with contextlib.suppress(OSError):
            feeder.stdin.write("go\n")
            feeder.stdin.flush()

    watcher = threading.Thread(target=start_feeder_at_hold, name="hold-watch", daemon=True)
    watcher.start()
    try:
        eng.run()
        status = "complete"
    except Exception:
        status = "fault"
        raise
    finally:
        stop_watch.set()
        watcher.join(5)
        with contextlib.suppress(OSError):
            feeder.stdin.close()
        try:
            feeder.wait(10)
        except subprocess.TimeoutExpired:
            feeder.kill()
        writer.close(status)
        inst.close()
        emu.stop()
    if not hold_window:
        raise AssertionError("the engine never reached the hold")
    # the hold: from the feeder's start (level reached) to just before the blank step
    t_from = hold_window[0]
    t_to = t_from + hold - 0.2
    iv = read_intervals(emu, t_from, t_to)
    dev = np.abs(iv - dt) * 1e3
    with open_session(tmp / "run.h5") as s:
        n_rec = s.n_frames
        markers = [int(s.frame(i)[0, 0]) for i in range(n_rec)]
        status_file = s.status
        events = s.events
    return {"n_ticks": int(iv.size), "p50_ms": float(np.percentile(dev, 50)), "p99_ms": float(np.percentile(dev, 99)),
            "max_dev_ms": float(dev.max()), "max_gap_ms": float(iv.max() * 1e3), "frames_sent": n_frames,
            "frames_delivered": eng.n_delivered, "frames_recorded": n_rec, "markers": markers,
            "frames_dropped": getattr(writer, "frames_dropped", 0) + getattr(src, "dropped", 0), "status": status_file,
            "frame_events": [e for e in events if e[1] == "frames"]}
