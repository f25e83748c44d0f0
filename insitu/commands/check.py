"""``insitu check``: connect to the configured instruments and print their state as found (changes nothing)."""
from __future__ import annotations

HELP = "Connect to the configured instruments and print their state as found (changes nothing)"
DESCRIPTION = """\
Connect to each instrument in an instruments TOML file and print what is
found: identity, output on/off, source level, current limit, source range and
the error queue (reading it empties it). Nothing is sent that changes the
output, the level, a limit or resets the instrument.

Exit codes: 0 all reachable; 1 bad config file; 2 an instrument is
unreachable, times out, is the wrong model or answers badly (one line naming
the resource and the cause).

example:
  insitu check --config examples/keithley2450.toml
"""


def add_arguments(parser):
    parser.add_argument("--config", required=True, metavar="INSTRUMENTS.toml", help="instruments configuration")


def _si(x: float, unit: str) -> str:
    if x == 0:
        return f"0 {unit}"
    for factor, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
        if abs(x) >= factor:
            return f"{x / factor:.4g} {prefix}{unit}"
    return f"{x:.3e} {unit}"


def _guard(resource: str, fn):
    """Run ``fn``; anything that is not already an insitu error becomes one line naming the resource."""
    from insitu.core.errors import InsituError, InstrumentError

    try:
        return fn()
    except InsituError:
        raise
    except Exception as exc:  # pyvisa/pyvisa-py/socket raise many kinds for an unreachable resource
        raise InstrumentError(f"{resource}: {type(exc).__name__}: {exc}") from exc


def _check_source_meter(cfg, clock, out):
    from insitu.instruments import open_source_meter

    if cfg.driver == "mock":
        out("source_meter  mock (simulated; nothing to connect)")
        return None
    sm = _guard(cfg.resource, lambda: open_source_meter(cfg, clock))
    try:
        d = _guard(cfg.resource, sm.describe)
    except BaseException:
        sm.close()
        raise
    out(f"source_meter  {d['model']} at {d['resource']} (VISA library {cfg.visa_library})")
    out(f"  identity       {d['idn']}")
    out(f"  output         {'ON' if d['output_on'] else 'off'}")
    out(f"  source         {d['source_function']}, level {_si(d['level_V'], 'V')} "
        f"(range {_si(d['source_range_V'], 'V')})")
    out(f"  current limit  {_si(d['current_limit_A'], 'A')} ({d['current_limit_A']:.6e} A)")
    out(f"  error queue    {'; '.join(d['errors']) if d['errors'] else 'empty'}")
    return sm


def _check_blanker(cfg, sm, out):
    if cfg.driver == "mock":
        out("beam_blanker  mock (simulated; nothing to connect)")
        return
    from insitu.drivers.blanker import open_blanker

    bb = _guard(cfg.resource, lambda: open_blanker(cfg, source_meter=sm))
    try:
        d = _guard(cfg.resource, bb.describe)
    finally:
        bb.close()
    extra = f", line {d['line']} ({d['line_mode']})" if "line" in d else ""
    out(f"beam_blanker  {cfg.driver} at {d['resource']}{extra}: blanked = {d['blanked']}")


def _check_frames(cfg, out):
    from pathlib import Path

    if cfg.driver == "mock":
        out("frames        mock (simulated)")
        return
    p = Path(cfg.path)
    state = "exists" if p.exists() else "NOT FOUND"
    out(f"frames        {cfg.driver}: {p} ({state})")


def run(args) -> int:
    from insitu.core.clock import Clock
    from insitu.control.config import load_instruments

    config, _text = load_instruments(args.config)
    clock = Clock()

    def out(line: str) -> None:
        print(line, flush=True)

    sm = _check_source_meter(config.source_meter, clock, out)
    try:
        _check_blanker(config.beam_blanker, sm, out)
    finally:
        if sm is not None:
            sm.close()
    _check_frames(config.frames, out)
    out("nothing was changed")
    return 0
