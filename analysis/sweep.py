"""Parameter sweeps of the transport simulator: is "these GBs block" robust to the material constants?

A grid over the material parameters of a microstructure file (:data:`PARAMETERS`); each combination
is one task (:func:`sweep_task`, run on a dask worker by ``insitu sweep``) that reads the
microstructure on the worker, solves, and returns only tables: the electrode currents (a row of
``sweep.csv``) and the GB table (rows of ``gb_sweep.csv``).

The network is linear, so a combination is solved once per electrode (that electrode at 1 V, the
others at 0 V: :func:`insitu.analysis.transport.simulator.unit_potentials`) and the result for the asked
potentials is a superposition (:func:`insitu.analysis.transport.simulator.superpose`). The small part of each
unit solution (electrode currents, GB table) is kept in ``OUT/solutions/``: a sweep of the same
microstructure and grid at another bias reuses it and solves nothing (a reversed polarity puts
another electrode highest: that electrode's unit solution is solved once, then stored too).

Example
-------
>>> grid = parameter_grid(["gb_ratio=10,20", "anisotropy=100,1000"])
>>> len(grid), grid[0]
(4, {'gb_ratio': 10.0, 'anisotropy': 100.0})
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from insitu.core.errors import UserError

#: material parameters a sweep may vary (attributes of the microstructure file, SI units)
PARAMETERS = ("anisotropy", "gb_ratio", "gb_thickness_m", "backbone_ratio", "sigma_ip")
#: columns of gb_sweep.csv after the parameter columns and the simulator's GB columns
RANK_COLUMN = "rank"


def parameter_grid(items) -> list[dict]:
    """``["NAME=V1,V2", ...]`` -> every combination, as dicts (the first parameter varies slowest).

    Raises a one-line :class:`UserError` for an unknown name, a repeated name, or a value that is
    not a positive number (``gb_thickness_m`` may be 0).
    """
    axes: dict[str, list[float]] = {}
    for item in items:
        name, sep, vals = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--param expects NAME=V1,V2,..., got '{item}'")
        if name not in PARAMETERS:
            raise UserError(f"--param {name}: unknown parameter (use one of {', '.join(PARAMETERS)})")
        if name in axes:
            raise UserError(f"--param given twice for '{name}'")
        values = []
        for v in vals.split(","):
            try:
                x = float(v)
            except ValueError:
                raise UserError(f"--param {name}: '{v.strip()}' is not a number") from None
            if not (np.isfinite(x) and (x > 0 or (x == 0 and name == "gb_thickness_m"))):
                raise UserError(f"--param {name}: {v.strip()} must be a positive number")
            values.append(x)
        if len(set(values)) != len(values):
            raise UserError(f"--param {name}: a value is repeated")
        axes[name] = values
    if not axes:
        raise UserError("give at least one --param NAME=V1,V2,...")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def reference_parameters(micro) -> dict:
    """The microstructure's own values of :data:`PARAMETERS`."""
    return {k: float(getattr(micro, k)) for k in PARAMETERS}


@dataclass
class SweepTask:
    """One combination of material parameters.

    Attributes
    ----------
    microstructure : str
        Microstructure file (read on the worker).
    micro_hash : str
        SHA-256 of its bytes (names the stored unit solutions).
    params : dict
        Parameter values of this combination (others as in the file).
    potentials : dict
        Electrode potentials (V).
    solutions_dir : str
        Folder of the stored unit solutions.
    sim_options : dict
        ``model``, ``gb_tol_deg``, ``solver``, ``rtol`` of :func:`insitu.analysis.transport.simulator.simulate`.
    """

    microstructure: str
    micro_hash: str
    params: dict
    potentials: dict
    solutions_dir: str
    sim_options: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=2)
def _read_micro(path: str, mtime_ns: int, size: int):
    from insitu.analysis.transport.microstructure import read_microstructure

    return read_microstructure(path)


def _micro(path: str):
    st = os.stat(path)
    return _read_micro(path, st.st_mtime_ns, st.st_size)   # read once per worker process


def _unit_key(task: SweepTask, electrode: str) -> str:
    doc = dict(micro=task.micro_hash, params=sorted(task.params.items()), options=sorted(task.sim_options.items()),
               electrode=electrode)
    return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()[:32]


def _light(res) -> dict:
    """The small part of a unit solution (no field arrays), as JSON."""
    gt = {k: np.asarray(v).tolist() for k, v in res.gb_table.items()}
    return dict(electrode_current=res.electrode_current, gb_table=gt, conductance_S=res.conductance_S,
                potentials=res.potentials, model=res.model, voxel_size_m=res.voxel_size_m, floating=res.floating,
                info={k: v for k, v in res.info.items() if isinstance(v, (int, float, str))})


def _from_light(d: dict):
    from insitu.analysis.transport.simulator import SimulationResult

    gt = {}
    for k, v in d["gb_table"].items():
        a = np.asarray(v)
        if k in ("grain_a", "grain_b"):
            a = a.astype(np.int32)
        elif k == "blocking":
            a = a.astype(bool)
        elif a.dtype.kind not in "US":
            a = a.astype(float)
        gt[k] = a
    empty = np.zeros((0,))
    return SimulationResult(potential=empty, field=empty, current_density=empty,
                            electrode_current=d["electrode_current"], gb_table=gt, conductance_S=d["conductance_S"],
                            potentials=d["potentials"], model=d["model"], voxel_size_m=d["voxel_size_m"],
                            floating=d["floating"], info=d["info"])


def _unit(task: SweepTask, micro, electrode: str):
    """The unit solution of ``electrode`` for this combination: stored, or solved now and stored."""
    from insitu.analysis.transport.simulator import simulate, unit_potentials

    path = Path(task.solutions_dir) / f"{_unit_key(task, electrode)}.json"
    if path.is_file():
        try:
            return _from_light(json.loads(path.read_text())), False
        except (OSError, ValueError, KeyError):
            pass                                   # unreadable: solve again
    res = simulate(micro, unit_potentials(micro.electrodes, electrode), **task.sim_options)
    light = _light(res)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(light))
    os.replace(tmp, path)                           # whole or absent, also with workers racing
    return _from_light(light), True


def sweep_task(task: SweepTask) -> dict:
    """Solve one combination on the calling worker; never raises.

    Returns
    -------
    dict
        ``params``, ``currents`` (electrode -> A), ``gb`` (the simulator's GB table as lists),
        ``solves`` (linear solves done here: 0 when the unit solution was stored), ``worker``,
        ``error`` ('' when all went well).
    """
    from insitu.analysis.transport.simulator import lone_electrode, simulate, superpose
    from insitu.core.scaleout import limit_task_threads, worker_address

    limit_task_threads()
    out = dict(params=task.params, currents={}, gb={}, solves=0, worker=worker_address(), error="")
    try:
        micro = replace(_micro(task.microstructure), **task.params)
        lone = lone_electrode(task.potentials)
        if lone is not None:
            unit, solved = _unit(task, micro, lone[0])
            res = superpose({lone[0]: unit}, task.potentials)
            out["solves"] = int(solved)
        else:   # three or more distinct potentials: the GB table is not a superposition
            res = simulate(micro, task.potentials, **task.sim_options)
            out["solves"] = 1
        out["currents"] = {k: float(v) for k, v in res.electrode_current.items()}
        out["gb"] = {k: np.asarray(v).tolist() for k, v in res.gb_table.items()}
    except Exception as exc:
        out["error"] = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, UserError):
            out["error"] = f"{type(exc).__name__}: {out['error']}"
    return out


def jump_ranks(jump) -> np.ndarray:
    """Rank of each GB by |jump|, 1 for the largest (ties in table order).

    >>> jump_ranks([0.5, -3.0, 1.0]).tolist()
    [3, 1, 2]
    """
    a = np.abs(np.asarray(jump, float))
    order = np.argsort(-a, kind="stable")
    r = np.empty(a.size, int)
    r[order] = np.arange(1, a.size + 1)
    return r


def gb_rows(params: dict, gb: dict, columns) -> list[dict]:
    """Rows of gb_sweep.csv for one combination: the parameters, the GB ``columns``, and the rank."""
    n = len(gb.get("grain_a", []))
    ranks = jump_ranks(gb["jump"]) if n else []
    rows = []
    for i in range(n):
        r = dict(params)
        for c in columns:
            v = gb[c][i]
            r[c] = ("true" if v else "false") if isinstance(v, bool) else v
        r[RANK_COLUMN] = int(ranks[i])
        rows.append(r)
    return rows


def _pairs(gb: dict) -> dict:
    return {(int(a), int(b)): i for i, (a, b) in enumerate(zip(gb["grain_a"], gb["grain_b"]))}


def stability(reference: dict, results: list[dict], k: int = 10) -> list[dict]:
    """How each combination's GB ranking compares with the reference's.

    Returns one dict per result: ``spearman`` (rank correlation of |jump| over the GBs both tables
    hold) and ``top_k_kept`` (fraction of the reference's top-``k`` blocking GBs by |jump| that are
    also among this combination's top-``k`` blocking GBs; NaN when the reference has none).
    """
    from scipy.stats import spearmanr

    ref = reference
    ref_idx = _pairs(ref)

    def top_blocking(gb):
        idx = [i for i in range(len(gb["grain_a"])) if gb["blocking"][i]]
        idx.sort(key=lambda i: -abs(gb["jump"][i]))
        return {(int(gb["grain_a"][i]), int(gb["grain_b"][i])) for i in idx[:k]}

    ref_top = top_blocking(ref)
    out = []
    for r in results:
        gb = r["gb"]
        if r["error"] or not gb.get("grain_a"):
            out.append(dict(spearman=float("nan"), top_k_kept=float("nan")))
            continue
        idx = _pairs(gb)
        common = [p for p in ref_idx if p in idx]
        rho = float("nan")
        if len(common) > 2:
            a = np.abs([ref["jump"][ref_idx[p]] for p in common])
            b = np.abs([gb["jump"][idx[p]] for p in common])
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                rho = float(spearmanr(a, b).statistic)
        kept = len(ref_top & top_blocking(gb)) / len(ref_top) if ref_top else float("nan")
        out.append(dict(spearman=rho, top_k_kept=kept))
    return out


def write_sweep_html(path, names: list[str], reference_params: dict, reference: dict, results: list[dict],
                     k: int = 10) -> Path:
    """sweep.html: rank correlation and top-k blocking GBs kept against the reference, per combination and
    per parameter value (which parameters move the ranking)."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from insitu.analysis.report import _img, _png

    st = stability(reference, results, k)
    label = [", ".join(f"{n}={r['params'][n]:g}" for n in names) for r in results]
    ref_txt = ", ".join(f"{n}={reference_params[n]:g}" for n in names)
    parts = [f"<h1>insitu sweep</h1><p>{len(results)} combinations of {', '.join(names)}; reference: the "
             f"microstructure's own values ({html.escape(ref_txt)}). Spearman ρ: rank correlation of the GB "
             f"current jumps |jump| with the reference's; top-{k} kept: share of the reference's {k} blocking GBs "
             "with the largest |jump| that stay among the combination's top blocking GBs.</p>"]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(results) + 2), 4))
    x = np.arange(len(results))
    ax.bar(x - 0.2, [s["spearman"] for s in st], 0.4, label="Spearman ρ of |jump|")
    ax.bar(x + 0.2, [s["top_k_kept"] for s in st], 0.4, label=f"top-{k} blocking kept")
    ax.set_xticks(x, label, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(min(0.0, np.nanmin([s["spearman"] for s in st] + [0.0])), 1.05)
    ax.legend(fontsize=8)
    parts.append("<h2>Stability against the reference</h2>" + _img(_png(fig), "stability per combination"))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    effects = []
    for ax, n in zip(axes[0], names):
        vals = sorted({r["params"][n] for r in results})
        rho = [np.nanmean([s["spearman"] for s, r in zip(st, results) if r["params"][n] == v] or [np.nan])
               for v in vals]
        kept = [np.nanmean([s["top_k_kept"] for s, r in zip(st, results) if r["params"][n] == v] or [np.nan])
                for v in vals]
        ax.plot(vals, rho, "o-", label="mean ρ")
        ax.plot(vals, kept, "s--", label=f"mean top-{k} kept")
        ax.axvline(reference_params[n], color="#999", lw=0.8)
        if len(vals) > 1 and min(vals) > 0 and max(vals) / min(vals) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(n)
        ax.set_ylim(-0.05, 1.05)
        effects.append((n, float(np.nanmax(kept) - np.nanmin(kept)) if np.isfinite(kept).any() else 0.0,
                        float(np.nanmax(rho) - np.nanmin(rho)) if np.isfinite(rho).any() else 0.0))
    axes[0][0].legend(fontsize=7)
    effects.sort(key=lambda e: (-e[1], -e[2]))
    txt = "; ".join(f"{n}: top-{k} kept varies by {a:.2f}, ρ by {b:.2f}" for n, a, b in effects)
    parts.append("<h2>Which parameters move the blocking GBs</h2><p>Mean over the other parameters at each value "
                 f"(grey line: reference). {html.escape(txt)}.</p>" + _img(_png(fig), "main effects"))
    rows = "".join(f"<tr><td>{html.escape(lab)}</td><td>{s['spearman']:.3f}</td><td>{s['top_k_kept']:.2f}</td>"
                   f"<td>{html.escape(r['worker'])}</td><td>{html.escape(r['error'])}</td></tr>"
                   for lab, s, r in zip(label, st, results))
    parts.append("<h2>Combinations</h2><table border=1 cellspacing=0 cellpadding=3><tr><th>parameters</th>"
                 f"<th>ρ</th><th>top-{k} kept</th><th>worker</th><th>error</th></tr>{rows}</table>")
    path = Path(path)
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>insitu sweep</title></head><body>"
                    + "\n".join(parts) + "</body></html>")
    return path
