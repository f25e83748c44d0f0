"""``insitu validate``: validate a protocol and print its expanded timeline (touches no hardware)."""
from __future__ import annotations

HELP = "Validate a protocol and print its expanded timeline (touches no hardware)"
DESCRIPTION = """\
Check a protocol YAML against its own limits (every step, repeats unrolled)
and print the expanded timeline: each step with its start/end time and
levels, then the duration, peak |V|, expected frames, beam-on time and
electron dose. Exit 1 with one line naming the field when it is invalid.

example:
  insitu validate examples/ding2023.yaml
"""

#: what each on_seed rule does, in the header line
ON_SEED_WORDS = {"mark": "each confirmed seed is an event", "blank": "a confirmed seed blanks the beam",
                 "hold": "a seed pauses the protocol until the operator resumes",
                 "abort": "a seed ramps to 0 V and stops the run, exit 3"}

#: at most this many timeline rows are printed in full (then head and tail)
MAX_ROWS = 60


def add_arguments(parser):
    parser.add_argument("protocol", metavar="PROTOCOL", help="protocol YAML file")
    parser.add_argument("--probe-current", type=float, default=None, metavar="A",
                        help="beam current for the dose (A; default: the instruments config's, else 5e-11)")
    parser.add_argument("--frame-interval", type=float, default=None, metavar="S",
                        help="seconds between frames, for frame counts and acquire times (default: the "
                             "instruments config's frames.rate_hz, else 25 s as insitu run --mock)")
    parser.add_argument("--config", metavar="FILE", help="instruments TOML (for the probe current and frame rate)")


def _hms(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_timeline(protocol, tl) -> str:
    """The text ``insitu validate`` prints."""
    lim = protocol.limits
    from insitu.control.protocol import effective_rate

    extra = []
    if lim.short_current is not None:
        extra.append(f"short at {lim.short_current:.3g} A")
    if lim.frame_stall_s is not None:
        extra.append(f"frame stall after {lim.frame_stall_s:g} s")
    lines = [
        f"protocol '{protocol.name}'" + (f": {protocol.description}" if protocol.description else ""),
        f"limits: |V| <= {lim.max_voltage:g} V, current limit {lim.compliance_current:.3g} A, "
        f"slew <= {lim.max_slew_rate:g} V/s (ramps at most {effective_rate(None, lim, protocol.sample_interval):.4g} V/s, "
        f"so that one extra {protocol.sample_interval:g}-s step in a 2-s window stays within the slew limit)"
        + ("; " + ", ".join(extra) if extra else ""),
        f"sample interval {protocol.sample_interval:g} s; on compliance: {protocol.on_compliance}"
        + (f"; on seed: {protocol.on_seed} ({ON_SEED_WORDS[protocol.on_seed]})" if protocol.on_seed != "none" else ""),
        "",
        f"{'#':>5}  {'start':>8}  {'end':>8}  {'V from':>8}  {'V to':>8}  {'beam':7}  step",
    ]
    rows = []
    for s in tl.segments:
        cond = f"   [{s.condition}; at most {_hms(s.t_end_s - s.t_start_s)}]" if s.condition else ""
        rows.append(f"{s.step_index + 1:>5}  {_hms(s.t_start_s):>8}  {_hms(s.t_end_s):>8}  {s.v_start_V:>8.3g}  "
                    f"{s.v_end_V:>8.3g}  {'blanked' if s.blanked else 'ON':7}  {s.label}{cond}")
    if len(rows) > MAX_ROWS:
        half = MAX_ROWS // 2
        rows = rows[:half] + [f"{'...':>5}  ({len(rows) - 2 * half} more steps)"] + rows[-half:]
    lines += rows
    n_cond = sum(1 for s in tl.segments if s.condition)
    lines += [
        "",
        f"duration   {_hms(tl.duration_s)} ({tl.duration_s:.0f} s)"
        + (f" at most: {n_cond} conditional step{'s' if n_cond != 1 else ''} may end earlier "
           "(times after one are latest times; frames, beam-on time and dose are upper bounds)" if n_cond else ""),
        f"peak |V|   {tl.peak_abs_V:g} V",
        f"frames     ~{tl.n_frames}",
        f"beam on    {_hms(tl.beam_on_s)} ({tl.beam_on_s:.0f} s)",
        f"dose       {tl.dose:.4g} e/Å² ({tl.dose_rate:.4g} e/Å²/s on a {protocol.field_of_view_m * 1e6:g} µm field)",
    ]
    return "\n".join(lines)


def run(args) -> int:
    from insitu.core.errors import UserError
    from insitu.control.protocol import expand, load_protocol
    from insitu.core.validation import printable

    protocol = load_protocol(args.protocol)
    from insitu.control.config import DEFAULT_FRAME_INTERVAL_S, load_instruments

    config = load_instruments(args.config)[0] if args.config else None
    probe = args.probe_current
    if probe is None and config is not None:
        probe = config.beam.probe_current_A
    probe = 5e-11 if probe is None else probe
    if not (0 <= probe <= 1e-6):
        raise UserError(f"--probe-current: {probe!r} A outside 0..1e-6 A")
    if args.frame_interval is not None:
        if not (0 < args.frame_interval < float("inf")):
            raise UserError(f"--frame-interval: must be a positive number of seconds (got {args.frame_interval!r})")
        rate = 1.0 / args.frame_interval
    else:   # the instruments' own rate, else the project default (what run --mock uses)
        rate = config.frames.rate_hz if config is not None else 1.0 / DEFAULT_FRAME_INTERVAL_S
    tl = expand(protocol, probe, frame_rate_hz=rate)
    print(printable(format_timeline(protocol, tl), keep="\n"))   # a name cannot drive the terminal
    return 0
