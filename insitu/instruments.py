"""Open the instruments an :class:`~insitu.control.config.InstrumentsConfig` names.

The engine receives an :class:`Instruments` bundle and never cares whether the
parts are real or mock. Opening never changes a source-meter's output.
"""
from __future__ import annotations

from insitu.core.clock import Clock
from insitu.control.config import InstrumentsConfig
from insitu.drivers.interfaces import Instruments


def open_source_meter(cfg, clock: Clock):
    """Open the configured source-meter (real drivers connect without touching the output)."""
    if cfg.driver == "mock":
        from insitu.drivers.mock import MockSourceMeter

        return MockSourceMeter(cfg.resistance_ohm, clock)
    from insitu.drivers import keithley

    cls = {"keithley2450": keithley.Keithley2450, "keithley2400": keithley.Keithley2400}[cfg.driver]
    return cls.connect(cfg.resource, visa_library=cfg.visa_library, timeout_s=cfg.timeout_s, clock=clock,
                       read_termination=cfg.read_termination, write_termination=cfg.write_termination)


def _reconnector(sm, cfg, clock: Clock):
    """``reconnect()`` for a real source-meter: reopen the same driver object in place when it can
    (a blanker sharing its connection keeps working), else open a new one. Returns the source-meter."""
    def reconnect():
        if hasattr(sm, "reopen"):
            sm.reopen()
            return sm
        return open_source_meter(cfg, clock)

    return reconnect


def open_instruments(config: InstrumentsConfig, clock: Clock | None = None, *, seed: int = 0) -> Instruments:
    """Open everything in ``config`` on one clock.

    When all three drivers are ``mock`` and the virtual specimen is available,
    the mocks share one :mod:`insitu.virtual` specimen; otherwise each part is
    opened on its own.
    """
    clock = clock or Clock()
    if config.is_mock:
        try:
            from insitu.virtual.instruments import open_virtual_instruments
        except ImportError:
            open_virtual_instruments = None
        if open_virtual_instruments is not None:
            return open_virtual_instruments(config, clock, seed=seed)
    sm = open_source_meter(config.source_meter, clock)
    reconnect = _reconnector(sm, config.source_meter, clock) if config.source_meter.driver != "mock" else None
    bb_cfg = config.beam_blanker
    if "beam_blanker" not in config.model_fields_set and config.frames.driver in ("folder", "replay"):
        # frames from the microscope and no blanker configured: the beam state is unknown, not "blanked"
        # (a stand-in mock blanker would report blanked and every frame would be dropped)
        blanker = None
    elif bb_cfg.driver == "mock":
        from insitu.drivers.mock import MockBeamBlanker

        blanker = MockBeamBlanker()
    else:
        from insitu.drivers import blanker as blanker_mod

        blanker = blanker_mod.open_blanker(bb_cfg, source_meter=sm)
    fr = config.frames
    if fr.driver == "mock":
        from insitu.drivers.mock import NoiseFrameSource

        frames = NoiseFrameSource(rate_hz=fr.rate_hz, clock=clock, blanker=blanker)
    elif fr.driver == "folder":
        from insitu.drivers.folder import FolderWatchSource

        frames = FolderWatchSource(fr.path, clock=clock, pattern=fr.pattern, settle_s=fr.settle_s)
    else:
        from insitu.drivers.replay import ReplayFrameSource

        frames = ReplayFrameSource(fr.path, clock=clock, speed=fr.speed)
    return Instruments(sm, blanker, frames, clock, config.beam.probe_current_A, reconnect=reconnect)
