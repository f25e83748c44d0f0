"""Shared fixtures: where the real data live, offscreen Qt."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    """``$INSITU_REAL_DATA`` or ``../shared/data/real`` beside the checkout."""
    env = os.environ.get("INSITU_REAL_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "real"


@pytest.fixture
def real_data() -> Path:
    """Folder of real microscope files; the test skips with a reason when it is absent."""
    d = real_data_dir()
    if not d.is_dir():
        pytest.skip(f"real data folder {d} not found (set INSITU_REAL_DATA to run these tests)")
    return d


@pytest.fixture
def emulator():
    """Factory of strict SCPI emulators (``tests/scpi_emulator.py``) on loopback; all stopped afterwards.

    ``emu = emulator(initial_output=True, initial_level=3.0)`` starts one; ``emu.resource`` is
    its ``TCPIP0::127.0.0.1::PORT::SOCKET`` string.
    """
    from scpi_emulator import Emulator2450

    started = []

    def make(**kw):
        emu = Emulator2450(**kw)
        emu.start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture(autouse=True)
def _qt_garbage_collected_in_the_gui_thread(request):
    """After a Qt test (its qtbot has closed its widgets): deliver the pending deletions and
    collect the garbage here, in the GUI thread. Otherwise a window's Python wrappers, caught in
    a reference cycle, may be collected later by whichever thread allocates next (an analysis or
    seed-watcher thread of the next test), and pyqtgraph items half deleted from there were
    painted: "wrapped C/C++ object of type AxisItem has been deleted", then a segmentation fault
    (1 run in 4-8 of tests/test_closedloop_gui.py)."""
    yield
    if "qtbot" not in request.fixturenames:
        return
    import gc

    from PyQt5 import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is not None:
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)
        app.processEvents()
    gc.collect()
