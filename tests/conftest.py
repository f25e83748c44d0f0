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
