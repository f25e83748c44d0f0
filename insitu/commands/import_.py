"""``insitu import``: import microscope files (velox emd, dm3/dm4, tiff) and a bias log into a session file."""
from __future__ import annotations

from pathlib import Path
from insitu.core.units import count

HELP = "Import microscope files (Velox EMD, DM3/DM4, TIFF) and a bias log into a session file"
DESCRIPTION = """\
Import frames from Velox .emd (single images and frame series), DigitalMicrograph
.dm3/.dm4 stacks, TIFF stacks (DM and ImageJ exports), or folders of such files,
into a session file with the same layout as a live run. Time 0 is the first frame.

A bias log (Protochips electrical CSV, or a plain CSV with the header
time_s,voltage_V,current_A) goes to /entry/bias on the frames' clock, aligned by
the absolute timestamps both files carry; --bias-offset-s S places the log's
first sample S seconds after the first frame instead (negative: before).
Each frame gets the bias and current interpolated at its time.

examples:
  insitu import series.emd --out run.h5
  insitu import frames/ --out run.h5 --bias-log electrical.csv --bias-offset-s -4.2
"""


def add_arguments(parser):
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="image file(s) or folder(s)")
    parser.add_argument("--out", required=True, help="session file to write (.h5)")
    parser.add_argument("--bias-log", metavar="CSV", help="Protochips electrical CSV or time_s,voltage_V,current_A CSV")
    parser.add_argument("--bias-offset-s", type=float, metavar="S",
                        help="time of the bias log's first sample relative to the first frame (s)")
    parser.add_argument("--bias-channel", default="A", help="Protochips channel (default A)")
    parser.add_argument("--detector", help="Velox detector to import (default HAADF, else the longest series)")
    parser.add_argument("--frame-interval-s", type=float, metavar="S",
                        help="frame spacing for files without a time calibration (default 1 s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing session file")


def _epoch_iso(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch).astimezone().isoformat()


def import_files(sources, out, *, bias_log=None, bias_offset_s=None, bias_channel="A", detector=None,
                 frame_interval_s=None, overwrite=False) -> dict:
    """Write a session file from microscope files (and a bias log); returns a summary dict.

    Parameters
    ----------
    sources : list of str or Path
        Image files or folders (see :func:`insitu.core.readers.read_frames`).
    out : str or Path
        Session file to create (refused if it exists, unless ``overwrite``).
    bias_log : str or Path, optional
    bias_offset_s : float, optional
        Log's first sample relative to the first frame, s.

    Returns
    -------
    dict
        ``n_frames``, ``n_bias``, ``frame_shape``, ``pixel_size_m``, ``time_source``, ``out``.
    """
    import numpy as np

    from insitu.core.biaslog import align_bias_log, interpolate_at, read_bias_log
    from insitu.core.errors import UserError
    from insitu.core.outputs import check_target, hdf5_failed, output_file, write_error
    from insitu.core.readers import read_frames
    from insitu.core.session import RecordingFailed

    out = check_target(out, overwrite)
    if bias_offset_s is not None and not np.isfinite(bias_offset_s):
        raise UserError(f"--bias-offset-s {bias_offset_s}: must be a finite number of seconds")
    if frame_interval_s is not None and not (np.isfinite(frame_interval_s) and frame_interval_s > 0):
        raise UserError(f"--frame-interval-s {frame_interval_s}: must be a finite number of seconds > 0")
    stack = read_frames(list(sources), detector=detector, frame_interval_s=frame_interval_s)
    log = read_bias_log(bias_log, channel=bias_channel) if bias_log else None
    t_log = align_bias_log(log, stack.times_s, stack.start_epoch_s, bias_offset_s) if log is not None else None
    if stack.start_epoch_s is not None:
        start_iso = _epoch_iso(stack.start_epoch_s)
    else:
        start_iso = _epoch_iso(Path(stack.sources[0]).stat().st_mtime)
    if t_log is not None:
        bias_at = interpolate_at(stack.times_s, t_log, log.voltage_V)
        current_at = interpolate_at(stack.times_s, t_log, log.current_A)
    else:
        bias_at = current_at = np.full(stack.n_frames, np.nan)

    files = list(dict.fromkeys(stack.sources))
    microscope = {k: v for k, v in stack.meta.items()
                  if v is not None and k != "frame_datetime_s" and isinstance(v, (str, int, float, list))}
    microscope["files"] = [str(Path(f).resolve()) for f in files]
    microscope["start_time_known"] = stack.start_epoch_s is not None
    with output_file(out, overwrite) as tmp:  # renamed to OUT when complete: never a partial session there
        try:
            _write_session(tmp, stack, log, t_log, bias_at, current_at, microscope, files, start_iso,
                           bias_log, bias_offset_s)
        except RecordingFailed as exc:
            hdf5_failed(exc.__context__, 1)  # a user error here (exit 1), also if HDF5 cannot clean up
            raise write_error(out, exc.__context__ or exc) from None
    return {"out": str(out), "n_frames": stack.n_frames, "n_bias": len(log) if log is not None else 0,
            "frame_shape": stack.frame_shape, "pixel_size_m": stack.pixel_size_m,
            "time_source": stack.meta.get("time_source", ""),
            "duration_s": float(stack.times_s[-1] - stack.times_s[0])}


def _write_session(path, stack, log, t_log, bias_at, current_at, microscope, files, start_iso, bias_log,
                   bias_offset_s) -> None:
    """The session file of an import (``path`` is the temporary name)."""
    from insitu.core.records import BiasSample, EventRecord, FrameRecord
    from insitu.core.session import SessionWriter

    w = SessionWriter(path, start_time_iso=start_iso, program="insitu import",
                      frame_shape=stack.frame_shape, frame_dtype=stack.frames.dtype,
                      when_full="wait")  # offline: every frame, at the disk's pace
    try:
        w.set_instrument("microscope", microscope)
        if log is not None:
            w.set_instrument("bias_log", {**log.meta, "n_samples": len(log),
                                          "offset_s": float(t_log[0]),
                                          "aligned_by": "--bias-offset-s" if bias_offset_s is not None
                                          else "absolute timestamps"})
        w.write(EventRecord(0.0, "info", f"imported {count(stack.n_frames, 'frame')} from {len(files)} file(s); "
                                         f"frame times: {stack.meta.get('time_source', '')}"))
        if stack.start_epoch_s is None:
            w.write(EventRecord(0.0, "info", "the files carry no acquisition time: start_time is the first "
                                             "file's modification time"))
        if log is not None:
            w.write(EventRecord(0.0, "info", f"bias log {Path(bias_log).name}: {len(log)} samples, first at "
                                             f"{t_log[0]:+.3f} s"))
            for t, v, i in zip(t_log, log.voltage_V, log.current_A):
                w.write(BiasSample(float(t), float("nan"), float(v), float(i), False))
        for k in range(stack.n_frames):
            w.write(FrameRecord(float(stack.times_s[k]), stack.frames[k], float(bias_at[k]), float(current_at[k]),
                                False, float("nan"), float(stack.pixel_size_m)))
    except BaseException:
        w.close("fault")
        raise
    w.close("complete")
    if w.error is not None:
        from insitu.core.session import RecordingFailed

        raise RecordingFailed(str(w.error))


def run(args) -> int:
    import warnings

    warnings.filterwarnings("ignore", module="rsciio")
    s = import_files(args.sources, args.out, bias_log=args.bias_log, bias_offset_s=args.bias_offset_s,
                     bias_channel=args.bias_channel, detector=args.detector,
                     frame_interval_s=args.frame_interval_s, overwrite=args.overwrite)
    print(f"wrote {s['out']}: {s['n_frames']} frames {s['frame_shape'][0]}×{s['frame_shape'][1]}, "
          f"pixel {s['pixel_size_m'] * 1e9:.4g} nm, {s['duration_s']:.3g} s ({s['time_source']})"
          + (f", {s['n_bias']} bias samples" if s["n_bias"] else ""))
    return 0
