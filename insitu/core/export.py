"""A session's frames as a calibrated HyperSpy ``Signal2D`` stack, and files from it.

The navigation axis is the frame time (s): a uniform axis when the frames are
evenly spaced, otherwise a non-uniform ``DataAxis`` holding the frame times.
The signal axes are y and x in nm. Per-frame bias (V), current (A), time (s),
beam state, dose and drift go to ``metadata.Insitu.frames``; the session's
start/end time, status and protocol to ``metadata.Insitu.session``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from insitu.core.errors import UserError
from insitu.core.outputs import check_space, check_target, output_dir, output_file

FORMATS = ("hspy", "zspy", "tiff")
#: sessions with more frame data than this are exported lazily (dask), one frame in memory at a time
LAZY_ABOVE_BYTES = 512 * 2**20


def _is_uniform(t: np.ndarray) -> bool:
    if len(t) < 3:
        return True
    d = np.diff(t)
    return bool(np.allclose(d, d[0], rtol=1e-6, atol=1e-9))


def session_to_signal(session, *, lazy: bool = False, uniform_time: bool | None = None):
    """Build a calibrated ``hyperspy.signals.Signal2D`` from a session.

    Parameters
    ----------
    session : Session or str or Path
        An open :class:`~insitu.core.session.Session` or a session file path.
    lazy : bool
        Keep the frames on disk (dask) instead of reading them all.
    uniform_time : bool, optional
        Force a uniform time axis (mean step; formats such as TIFF need
        one). Default: uniform only when the frame times are evenly spaced.

    Returns
    -------
    hyperspy.signals.Signal2D
        Shape ``(n | nx, ny)``, axes ``time`` (s), ``y`` and ``x`` (nm).

    Example
    -------
    >>> sig = session_to_signal("run.h5")             # doctest: +SKIP
    >>> sig.axes_manager["x"].scale, sig.axes_manager["x"].units   # doctest: +SKIP
    (5.3, 'nm')
    """
    import hyperspy.api as hs

    from insitu.core.session import Session, open_session

    s = session if isinstance(session, Session) else open_session(session)
    if s.n_frames == 0:
        raise UserError(f"{s.path}: the session holds no frames to export")
    if lazy:
        import dask.array as da

        data = da.from_array(s._data, chunks=(1,) + tuple(s.frame_shape))[: s.n_frames]
    else:
        data = s._data[: s.n_frames]
    ft = s.frame_table
    t = np.asarray(ft["time"], float)
    px = s.pixel_size_m
    px_nm = px * 1e9 if np.isfinite(px) and px > 0 else 1.0
    px_units = "nm" if np.isfinite(px) and px > 0 else "px"
    uniform = _is_uniform(t) if uniform_time is None else uniform_time
    if uniform:
        step = float((t[-1] - t[0]) / (len(t) - 1)) if len(t) > 1 else 1.0
        t_axis = {"name": "time", "units": "s", "navigate": True, "size": len(t), "offset": float(t[0]),
                  "scale": step if step > 0 else 1.0}
    else:
        t_axis = {"name": "time", "units": "s", "navigate": True, "axis": t}
    ny, nx = s.frame_shape
    axes = [t_axis,
            {"name": "y", "units": px_units, "scale": px_nm, "offset": 0.0, "size": ny, "navigate": False},
            {"name": "x", "units": px_units, "scale": px_nm, "offset": 0.0, "size": nx, "navigate": False}]
    if lazy:
        sig = hs.signals.Signal2D(data, axes=axes).as_lazy()
        sig.data = data
    else:
        sig = hs.signals.Signal2D(np.asarray(data), axes=axes)
    title = s.protocol_name or Path(s.path).stem
    md = sig.metadata
    md.General.title = title
    md.General.original_filename = Path(s.path).name
    if s.start_time:
        date, _, clock = s.start_time.partition("T")
        md.set_item("General.date", date)
        md.set_item("General.time", clock[:8])
    md.set_item("Signal.quantity", "Intensity (counts)")
    for k in ("time", "bias", "current", "blanked", "dose", "drift_x", "drift_y", "pixel_size"):
        md.set_item(f"Insitu.frames.{k}", np.asarray(ft[k]))
    md.set_item("Insitu.frames.units", "time s, bias V, current A, dose e/Å², drift px, pixel_size m")
    md.set_item("Insitu.session.start_time", s.start_time)
    md.set_item("Insitu.session.end_time", s.end_time or "")
    md.set_item("Insitu.session.status", s.status)
    md.set_item("Insitu.session.program", f"{s.program} {s.version}".strip())
    if s.protocol_text:
        md.set_item("Insitu.session.protocol", s.protocol_text)
    if s.has("/entry/instrument/microscope"):
        mic = s.group("/entry/instrument/microscope")
        if "ht_V" in mic:
            md.set_item("Acquisition_instrument.TEM.beam_energy", float(mic["ht_V"]) / 1e3)
        if "dwell_s" in mic:
            md.set_item("Acquisition_instrument.TEM.dwell_time", float(mic["dwell_s"]))
        if isinstance(mic.get("detector"), str):
            md.set_item("Acquisition_instrument.TEM.Detector.name", mic["detector"])
    return sig


def export_session(session_path, to: str, out, *, overwrite: bool = False) -> list[Path]:
    """Write a session's frames as ``.hspy``, ``.zspy`` or a multi-page TIFF; returns the files written.

    TIFF keeps the pixel size but not the non-uniform time axis or the
    metadata, so a ``<out>.frames.csv`` (index, time_s, bias_V, current_A,
    blanked, dose) is written beside it.
    """
    from insitu.core.session import open_session

    if to not in FORMATS:
        raise UserError(f"unknown export format {to!r} (use {', '.join(FORMATS)})")
    out = Path(out)
    suffix = {"hspy": ".hspy", "zspy": ".zspy", "tiff": ".tif"}[to]
    if out.suffix.lower() not in ({suffix, ".tiff"} if to == "tiff" else {suffix}):
        out = out.with_name(out.name + suffix)
    written = [out]
    if to == "tiff":
        written.append(out.with_name(out.name + ".frames.csv"))
    for p in written:
        check_target(p, overwrite, folder=(to == "zspy" and p == out))
    with open_session(session_path) as s:
        n_bytes = s.n_frames * int(np.prod(s.frame_shape or (0,))) * (s.frame_dtype.itemsize if s.frame_dtype else 0)
        lazy = n_bytes > LAZY_ABOVE_BYTES  # long sessions: frames stream from disk instead of filling memory
        check_space(out, n_bytes + 64 * 1024 * (s.n_frames + 1))  # frames + per-frame metadata
        sig = session_to_signal(s, lazy=lazy, uniform_time=True if to == "tiff" else None)
        if to == "zspy":
            try:
                import zarr  # noqa: F401
            except ImportError:
                raise UserError("zspy export needs the 'zarr' package (pip install 'zarr<3')") from None
        # written under temporary names, renamed when complete: a failure leaves nothing that looks finished
        with contextlib.ExitStack() as stack:
            if to == "tiff":
                csv_tmp = stack.enter_context(output_file(written[1], overwrite))
                ft = s.frame_table
                rows = np.column_stack([np.arange(s.n_frames), ft["time"], ft["bias"], ft["current"],
                                        ft["blanked"].astype(int), ft["dose"]])
                np.savetxt(csv_tmp, rows, delimiter=",", fmt=["%d", "%.6f", "%.9g", "%.9g", "%d", "%.6g"],
                           header="index,time_s,bias_V,current_A,blanked,dose_e_per_A2", comments="")
            tmp = stack.enter_context((output_dir if to == "zspy" else output_file)(out, overwrite))
            sig.save(str(tmp), overwrite=True, **({} if to == "tiff" else {"show_progressbar": False}))
    return written
