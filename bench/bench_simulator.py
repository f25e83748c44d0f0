"""Benchmark: the whole ``insitu simulate`` command on a 2048 x 2048 Voronoi lamella.

Baseline (same run, same machine): the paper's network (``--model paper``) assembled link by link
with scipy and solved with pyamg Ruge-Stueben + CG (rtol 1e-8): ``bench/simulate_baseline.py``, the
``insitu simulate`` command with that solver (``tests/network_oracles.reference_solver``) plugged
in. Candidates: the default solver for ``--model paper`` and ``--model full`` (the
thin-film tensor; structured multigrid-preconditioned CG, rtol 1e-8). Each command runs in its own process (start-up,
reading the file, solving, GB table and writing result.h5 + gb.csv all count); peak memory is that
process's maximum resident set size.

Environment: INSITU_BENCH_SIM_SIZE (default 2048), INSITU_BENCH_SIM_GRAINS (default 300),
INSITU_BENCH_SIM_ROUNDS (default 2: baseline, baseline_coarse, paper, full, then again; the ratios
of each round and their median are printed, since this machine's load varies from minute to minute).
Two baselines: ``baseline`` solves the applied field (GB classification) on the map's own grid, as
a straightforward command would; ``baseline_coarse`` on the command's coarser grid, which leaves the
difference of the linear solvers alone. Both ratios are printed.
The multigrid kernels use numba's thread count (NUMBA_NUM_THREADS, default: all cores).
Goals (issues 5, 14): >= 5x (paper) and >= 3x (full) faster than the baseline, peak <= 3 GB.
Before the rounds, the first call's numba compile time is measured: a 64^2 simulation of each
model with an empty NUMBA_CACHE_DIR.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd, env=None):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out, err = p.stdout.read().decode(), p.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {err.strip()[-500:]}")
    return wall, ru.ru_maxrss / 1024.0, out


def _info(out_dir):
    import h5py

    with h5py.File(Path(out_dir) / "result.h5", "r") as f:
        return json.loads(f.attrs["info"]), f["potential"][()]


def main() -> dict:
    import numpy as np

    from insitu.analysis.transport.lamella import voronoi_lamella
    from insitu.analysis.transport.microstructure import write_microstructure

    size = int(os.environ.get("INSITU_BENCH_SIM_SIZE", "2048"))
    grains = int(os.environ.get("INSITU_BENCH_SIM_GRAINS", "300"))
    exe = [sys.executable, "-m", "insitu.cli"]
    with tempfile.TemporaryDirectory(prefix="bench_sim_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        m = voronoi_lamella((size, size), n_grains=grains, seed=0)
        write_microstructure(tmp / "micro.h5", m)
        print(f"lamella {size}x{size}, {m.grain_ids.size} grains: built in {time.perf_counter() - t0:.1f} s", flush=True)
        write_microstructure(tmp / "small.h5", voronoi_lamella((64, 64), n_grains=5))
        small = exe + ["simulate", str(tmp / "small.h5"), "--potential", "top=0", "--potential", "right=1",
                       "--out", str(tmp / "warm"), "--overwrite", "--solver", "mg", "--model"]
        # first call on a machine: compile everything into an empty cache, then run again warm
        cold_env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba_cold"))
        compile_s = {}
        for model in ("paper", "full"):
            t0 = time.perf_counter()
            subprocess.run(small + [model], env=cold_env, check=True, capture_output=True)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            subprocess.run(small + [model], env=cold_env, check=True, capture_output=True)
            warm = time.perf_counter() - t0
            compile_s[model] = cold
            print(f"first call, {model} model: {cold:.1f} s with an empty numba cache (the paper model "
                  f"first: it compiles the shared kernels too), then {warm:.1f} s warm", flush=True)
        # warm-up on the small file so that numba's own on-disk cache is filled (a fresh clone compiles once)
        for model in ("paper", "full"):
            _run(small + [model])
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)", flush=True)
        rounds = max(1, int(os.environ.get("INSITU_BENCH_SIM_ROUNDS", "2")))
        import numba

        print(f"numba threads: {numba.get_num_threads()}", flush=True)
        allruns = []
        for rnd in range(rounds):
            runs = {}
            baseline = [sys.executable, str(Path(__file__).with_name("simulate_baseline.py"))]
            for name, prog, extra in (("baseline", baseline, ["--model", "paper"]),
                                      ("baseline_coarse", baseline, ["--model", "paper"]),
                                      ("paper", exe, ["--model", "paper"]),
                                      ("full", exe, ["--model", "full"])):
                out = tmp / f"{name}{rnd}"
                env = dict(os.environ, INSITU_BASELINE_APPLIED="coarse" if name == "baseline_coarse" else "fine")
                wall, rss, _ = _run(prog + ["simulate", str(tmp / "micro.h5"), "--potential", "top=0", "--potential",
                                           "right=1", "--out", str(out)] + extra, env=env)
                info, phi = _info(out)
                runs[name] = dict(wall_s=wall, peak_mb=rss, info=info, phi=phi)
                print(f"round {rnd + 1} {name:9s} {wall:7.1f} s  peak {rss:7.0f} MB  solver {info.get('method')} "
                      f"{int(info.get('iterations', 0))} it  (assemble {info.get('t_assemble_s', 0):.1f} s, "
                      f"solve {info.get('t_solve_s', 0):.1f} s, post {info.get('t_post_s', 0):.1f} s)", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            base, basec = runs["baseline"]["wall_s"], runs["baseline_coarse"]["wall_s"]
            print(f"round {rnd + 1}: paper {base / runs['paper']['wall_s']:.2f}x, "
                  f"full {base / runs['full']['wall_s']:.2f}x; against the baseline with the coarse applied "
                  f"field: paper {basec / runs['paper']['wall_s']:.2f}x, full {basec / runs['full']['wall_s']:.2f}x; "
                  "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
            allruns.append(runs)
        runs = allruns[-1]
        ratio = {m: float(np.median([r["baseline"]["wall_s"] / r[m]["wall_s"] for r in allruns]))
                 for m in ("paper", "full")}
        ratio_c = {m: float(np.median([r["baseline_coarse"]["wall_s"] / r[m]["wall_s"] for r in allruns]))
                   for m in ("paper", "full")}
        base = float(np.median([r["baseline"]["wall_s"] for r in allruns]))
        diff = float(np.nanmax(np.abs(runs["paper"]["phi"] - runs["baseline"]["phi"])))
        peak = {k: max(r[k]["peak_mb"] for r in allruns) for k in runs}
        result = {
            "size": size,
            "rounds": rounds,
            "baseline_s": base,
            "paper_s": float(np.median([r["paper"]["wall_s"] for r in allruns])),
            "full_s": float(np.median([r["full"]["wall_s"] for r in allruns])),
            "ratio_paper": ratio["paper"],
            "compile_s": compile_s,
            "iterations": {k: int(runs[k]["info"].get("iterations", 0)) for k in runs},
            "ratio_full": ratio["full"],
            "baseline_coarse_s": float(np.median([r["baseline_coarse"]["wall_s"] for r in allruns])),
            "ratio_paper_vs_coarse_baseline": ratio_c["paper"],
            "ratio_full_vs_coarse_baseline": ratio_c["full"],
            "peak_mb": peak,
            "max_abs_dphi_paper_vs_baseline_V": diff,
            "load_average_after": os.getloadavg(),
        }
        print(f"speed-up vs baseline (median of {rounds} rounds): paper {result['ratio_paper']:.2f}x (goal 5x), "
              f"full {result['ratio_full']:.2f}x (goal 3x); against the baseline with the command's coarse "
              f"applied field (the solvers alone): paper {ratio_c['paper']:.2f}x, full {ratio_c['full']:.2f}x; "
              "peak memory "
              + ", ".join(f"{k} {v:.0f} MB" for k, v in result["peak_mb"].items()) + " (goal <= 3072 MB); "
              f"max |phi_paper - phi_baseline| = {diff:.1e} V; load average after: "
              + " ".join(f"{x:.2f}" for x in result["load_average_after"]), flush=True)
        return result


if __name__ == "__main__":
    main()
