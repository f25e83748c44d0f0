"""Batch analysis of many sessions: one :func:`insitu.analysis.pipeline.analyze` per session, one table.

Each session is one task (:func:`analyze_task`, run on a dask worker by ``insitu batch analyze``):
it runs the usual analysis into ``OUT/<session stem>/`` and returns one row of ``batch.csv``
(:data:`BATCH_COLUMNS`) plus the few numbers the combined figures need. Errors are caught in the
task and come back in the row, so one bad session never stops the others.

A finished session leaves ``OUT/<stem>/batch.json`` with its content key (SHA-256 of the input's
bytes and of the analysis options); a re-run finds it and returns the stored row without
analysing again, unless forced.

Example
-------
>>> task = BatchTask(input="run1.h5", out_dir="out/run1", options={"threshold": 4.5})   # doctest: +SKIP
>>> analyze_task(task)["row"]["status"]                                                # doctest: +SKIP
'ok'
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from insitu.core.errors import UserError

#: batch.csv columns (binding, issue 19)
BATCH_COLUMNS = ("session", "status", "error", "n_frames", "n_seeds", "first_seed_time_s", "bias_at_first_seed_V",
                 "dose_at_first_seed", "auc", "p_value", "worker")
#: per-session record of a finished analysis (content key, row, figure data)
DONE_FILE = "batch.json"
_CHUNK = 1 << 20


@dataclass
class BatchTask:
    """One session to analyse.

    Attributes
    ----------
    input : str
        Session file or folder of frames.
    out_dir : str
        Where its analysis goes (``OUT/<stem>``).
    options : dict
        Keyword arguments of :func:`insitu.analysis.pipeline.analyze` (``microstructure``,
        ``simulation``, ``map_transform``, ``threshold``, ``persistence``, ``sigma_px``, ...).
    force : bool
        Analyse even when ``out_dir`` holds a finished analysis of the same content.
    """

    input: str
    out_dir: str
    options: dict = field(default_factory=dict)
    force: bool = False


def collect_inputs(paths) -> list[Path]:
    """Expand the command-line inputs into the list of sessions to analyse.

    A file is one input. A folder holding ``*.h5`` files gives each of them (sorted by name); any
    other folder is one input (a folder of frames, as ``insitu analyze`` reads it). Raises a
    :class:`UserError` for a missing path, a folder with nothing to analyse, or two inputs that
    would write to the same ``OUT/<stem>`` folder.

    Example
    -------
    >>> collect_inputs(["sessions/"])     # doctest: +SKIP
    [PosixPath('sessions/a.h5'), PosixPath('sessions/b.h5')]
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p}: no such file or folder")
        if p.is_dir():
            h5 = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".h5")
            if h5:
                out.extend(h5)
            elif any(f.is_file() for f in p.iterdir()):
                out.append(p)
            else:
                raise UserError(f"{p}: empty folder, nothing to analyse")
        else:
            out.append(p)
    seen: dict[str, Path] = {}
    for p in out:
        if p.stem in seen and seen[p.stem].resolve() != p.resolve():
            raise UserError(f"{seen[p.stem]} and {p} would both be analysed into <out>/{p.stem}: rename one")
        seen[p.stem] = p
    unique = {p.resolve(): p for p in out}          # the same file given twice is analysed once
    return list(unique.values())


def content_hash(path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (relative names and bytes, sorted by name)."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if f is not p:
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def task_key(task: BatchTask) -> str:
    """Content key of a task: the input's bytes, the options, and the bytes of the correlation inputs."""
    opts = {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in sorted(task.options.items())}
    for k in ("microstructure", "simulation"):
        if opts.get(k):
            opts[k] = content_hash(opts[k])
    h = hashlib.sha256(content_hash(task.input).encode())
    h.update(json.dumps(opts, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _nan(x) -> float:
    return float(x) if x is not None else float("nan")


def _session_numbers(path, seeds: dict) -> dict:
    """Bias, dose and charge at the seeds' first frames; beam condition (sessions only)."""
    from insitu.core.session import open_session

    with open_session(path) as s:
        ft, bias = s.frame_table, s.bias
        ff = np.asarray(seeds["first_frame"], int)
        ff = ff[(ff >= 0) & (ff < len(ft["time"]))]
        t_b, i_b = np.asarray(bias["time"], float), np.asarray(bias["current"], float)
        if t_b.size > 1:
            q = np.concatenate([[0.0], np.cumsum(0.5 * (i_b[1:] + i_b[:-1]) * np.diff(t_b))])
            charge = np.interp(np.asarray(ft["time"], float)[ff], t_b, q)
        else:
            charge = np.zeros(ff.size)
        blanked = np.asarray(ft["blanked"], bool)
        return dict(seed_bias_V=np.asarray(ft["bias"], float)[ff].tolist(),
                    seed_dose=np.asarray(ft["dose"], float)[ff].tolist(), seed_charge_C=charge.tolist(),
                    beam="blank" if blanked.size and blanked.mean() > 0.5 else "on",
                    protocol=s.protocol_name)


def _row_and_figure(task: BatchTask, paths: dict) -> tuple[dict, dict]:
    summary = json.loads(Path(paths["summary"]).read_text())
    with open(paths["seeds"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    seeds = {"first_frame": [int(r["first_frame"]) for r in rows],
             "first_time_s": [float(r["first_time_s"]) for r in rows]}
    order = np.argsort(seeds["first_time_s"], kind="stable")
    seeds = {k: [v[i] for i in order] for k, v in seeds.items()}
    fig = dict(seed_time_s=seeds["first_time_s"], seed_bias_V=[], seed_dose=[], seed_charge_C=[], beam="",
               protocol="")
    from insitu.core.session import is_session_file

    if Path(task.input).is_file() and is_session_file(task.input):
        fig.update(_session_numbers(task.input, seeds))
    st = summary.get("statistics") or {}
    has = bool(seeds["first_time_s"])
    row = dict(session=str(task.input), status="ok", error="", n_frames=int(summary["n_frames"]),
               n_seeds=int(summary["n_seeds"]),
               first_seed_time_s=seeds["first_time_s"][0] if has else float("nan"),
               bias_at_first_seed_V=fig["seed_bias_V"][0] if fig["seed_bias_V"] else float("nan"),
               dose_at_first_seed=fig["seed_dose"][0] if fig["seed_dose"] else float("nan"),
               auc=_nan(st.get("auc")), p_value=_nan(st.get("p_value")))
    return row, fig


def analyze_task(task: BatchTask) -> dict:
    """Analyse one session on the calling worker; never raises.

    Returns
    -------
    dict
        ``row`` (the :data:`BATCH_COLUMNS` of batch.csv), ``figure`` (seed times, bias, dose, charge,
        beam condition for batch.html), ``skipped`` (True when a finished analysis of the same content
        was found in ``out_dir``).
    """
    from insitu.core.scaleout import limit_task_threads, worker_address

    limit_task_threads()
    worker = worker_address()
    out = Path(task.out_dir)
    done = out / DONE_FILE
    try:
        key = task_key(task)
        if not task.force and done.is_file():
            try:
                rec = json.loads(done.read_text())
            except (OSError, ValueError):
                rec = {}
            if rec.get("key") == key and rec.get("row", {}).get("status") == "ok":
                return dict(row=rec["row"], figure=rec.get("figure", {}), skipped=True)
        done.unlink(missing_ok=True)
        from insitu.analysis.pipeline import analyze

        opts = dict(task.options)
        opts.setdefault("workers", 1)          # one FFT thread per worker process
        paths = analyze(task.input, out, **opts)
        row, fig = _row_and_figure(task, paths)
        row["worker"] = worker
        done.write_text(json.dumps(dict(key=key, row=row, figure=fig), default=float))
        return dict(row=row, figure=fig, skipped=False)
    except Exception as exc:
        msg = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        msg = " ".join(msg.split()) or type(exc).__name__
        row = {c: float("nan") for c in BATCH_COLUMNS}
        row.update(session=str(task.input), status="error", error=msg, n_frames=0, n_seeds=0, worker=worker)
        return dict(row=row, figure={}, skipped=False)


def error_result(task: BatchTask, exc: BaseException) -> dict:
    """The result of a task that could not run at all (its worker died): an error row."""
    row = {c: float("nan") for c in BATCH_COLUMNS}
    row.update(session=str(task.input), status="error", error=f"task failed: {type(exc).__name__}: {exc}",
               n_frames=0, n_seeds=0, worker="")
    return dict(row=row, figure={}, skipped=False)


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def write_table(rows: list[dict], path, columns) -> Path:
    """Write ``rows`` (dicts) as CSV with ``columns``; NaN as an empty cell, floats in full precision."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c, "")) for c in columns])
    return path


_CONDITION = re.compile(r"(beam|blank(ed)?|on|off|unblanked|ref(erence)?)", re.I)


def pair_key(session: str) -> str:
    """What a beam-on session and its beam-blank reference share: the stem without beam words.

    >>> pair_key("lamella3-beam-blank.h5") == pair_key("lamella3.h5") == pair_key("lamella3_on.h5")
    True
    """
    parts = [p for p in re.split(r"[-_. ]+", Path(session).stem) if p and not _CONDITION.fullmatch(p)]
    return "-".join(parts).lower()


def beam_pairs(rows: list[dict], figures: list[dict]) -> list[tuple[str, dict, dict]]:
    """``(name, beam-on row, beam-blank row)`` for sessions whose names differ by beam words only."""
    groups: dict[str, dict] = {}
    for r, f in zip(rows, figures):
        if r["status"] == "ok" and f.get("beam") in ("on", "blank"):
            groups.setdefault(pair_key(r["session"]), {}).setdefault(f["beam"], r)
    return [(k, g["on"], g["blank"]) for k, g in sorted(groups.items()) if "on" in g and "blank" in g]


def write_batch_html(path, rows: list[dict], figures: list[dict]) -> Path:
    """batch.html: seeds against time, charge and dose per session; first-seed bias; beam-on vs beam-blank."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from insitu.analysis.report import _img, _png

    ok = [(r, f) for r, f in zip(rows, figures) if r["status"] == "ok"]
    parts = [f"<h1>insitu batch analysis</h1><p>{len(rows)} sessions, {len(ok)} analysed, "
             f"{len(rows) - len(ok)} failed.</p>"]
    if ok:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for r, f in ok:
            name = Path(r["session"]).stem
            n = np.arange(1, len(f.get("seed_time_s", [])) + 1)
            for ax, key in zip(axes, ("seed_time_s", "seed_charge_C", "seed_dose")):
                x = f.get(key) or []
                if len(x) == len(n) and len(n):
                    ax.step(np.r_[0.0, x], np.r_[0, n], where="post", label=name)
        for ax, lab in zip(axes, ("time (s)", "charge through the specimen (C)", "dose (e/Å²)")):
            ax.set_xlabel(lab)
            ax.set_ylabel("seeds (cumulative)")
            if not ax.lines:
                ax.text(0.5, 0.5, "no seed in any session", ha="center", va="center", transform=ax.transAxes)
        if axes[0].lines:
            axes[0].legend(fontsize=7)
        parts.append("<h2>Seeds against time, charge and dose</h2>" + _img(_png(fig), "seeds per session"))
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(ok) + 2), 3.8))
        names = [Path(r["session"]).stem for r, _ in ok]
        ax.bar(range(len(ok)), [r["bias_at_first_seed_V"] for r, _ in ok],
               color=["#777" if f.get("beam") == "blank" else "#c33" for _, f in ok])
        ax.set_xticks(range(len(ok)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("bias at the first seed (V)")
        parts.append("<h2>First-seed bias</h2><p>red: beam on, grey: beam blanked; no bar: no seed or no bias "
                     "log.</p>" + _img(_png(fig), "first-seed bias"))
    pairs = beam_pairs(rows, figures)
    if pairs:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        x = np.arange(len(pairs))
        for ax, col, lab in ((axes[0], "n_seeds", "seeds"), (axes[1], "first_seed_time_s", "first seed (s)")):
            ax.bar(x - 0.2, [p[1][col] for p in pairs], 0.4, color="#c33", label="beam on")
            ax.bar(x + 0.2, [p[2][col] for p in pairs], 0.4, color="#777", label="beam blanked")
            ax.set_xticks(x, [p[0] for p in pairs], rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(lab)
        axes[0].legend(fontsize=8)
        parts.append("<h2>Beam on against beam blanked</h2><p>Pairs are sessions whose names differ only by "
                     "beam words (beam, blank, on, off, reference).</p>" + _img(_png(fig), "beam pairs"))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in BATCH_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c, '')))}</td>" for c in BATCH_COLUMNS) + "</tr>"
                   for r in rows)
    parts.append(f"<h2>Sessions</h2><table border=1 cellspacing=0 cellpadding=3><tr>{head}</tr>{body}</table>")
    path = Path(path)
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>insitu batch</title></head><body>"
                    + "\n".join(parts) + "</body></html>")
    return path
