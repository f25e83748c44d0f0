"""``insitu sweep``: the transport simulator over a grid of material parameters, on dask.distributed."""
from __future__ import annotations

import argparse
import sys

from insitu.core.errors import EXIT_OK, EXIT_USER, UserError

HELP = "Simulate over a grid of material parameters (dask.distributed): sweep.csv, gb_sweep.csv, sweep.html"
DESCRIPTION = """\
Run the transport simulator on MICRO.h5 for every combination of the material parameters given
with --param (anisotropy, gb_ratio, gb_thickness_m, backbone_ratio, sigma_ip; the others as in
the file), one task per combination.

Writes DIR/sweep.csv (the parameter columns, current_<electrode>_A for each electrode, worker),
DIR/gb_sweep.csv (the parameter columns, the simulator's GB columns as in gb.csv - grain_a,
grain_b, jump, blocking, ... - and rank: 1 for the largest |jump| of that combination) and
DIR/sweep.html (how stable the top blocking GBs are against the file's own parameters, and which
parameters move them).

The network is linear: each combination is solved once per electrode (it at 1 V, the others at
0 V) and the asked potentials are a superposition. These unit solutions are kept in
DIR/solutions/, so the same sweep at another bias solves nothing (with the other electrode
highest, its unit solutions are solved once and stored too).

examples:
  insitu sweep micro.h5 --potential top=0 --potential right=1 --param gb_ratio=5,20,80 \\
      --param anisotropy=100,1000 --out sweep/ --workers 4
  insitu sweep micro.h5 --potential top=0 --potential right=12 --param gb_ratio=5,20,80 --out sweep/ \\
      --scheduler tcp://labserver:8786
"""

#: options of ``insitu simulate`` that a sweep passes to every combination (dest -> simulate() keyword)
SIMULATE_OPTIONS = {"model": "model", "gb_tol": "gb_tol_deg", "solver": "solver", "rtol": "rtol"}


def add_arguments(parser):
    from insitu.commands import simulate as simulate_cmd
    from insitu.commands.batch import add_engine_arguments

    parser.add_argument("microstructure", metavar="MICRO.h5", help="microstructure HDF5 file")
    parser.add_argument("--potential", action="append", default=[], metavar="NAME=VOLTS",
                        help="potential of an electrode (repeat for each electrode)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2,...",
                        help="values of one material parameter (repeat for each parameter swept)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    single = argparse.ArgumentParser(add_help=False)   # the simulator options, as 'insitu simulate' has them
    simulate_cmd.add_arguments(single)
    for action in single._actions:
        if action.dest in SIMULATE_OPTIONS:
            parser._add_action(action)
    parser.add_argument("--top-k", type=int, default=10, metavar="K",
                        help="blocking GBs followed in sweep.html (default 10)")
    add_engine_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    from insitu.analysis import sweep
    from insitu.analysis.batch import content_hash, write_table
    from insitu.analysis.transport.microstructure import read_microstructure
    from insitu.analysis.transport.simulator import GB_COLUMNS
    from insitu.commands.simulate import parse_potentials
    from insitu.core.scaleout import open_client, run_tasks

    pots = parse_potentials(args.potential)
    grid = sweep.parameter_grid(args.param)
    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be at least 1")
    micro = read_microstructure(args.microstructure)
    missing = sorted(set(micro.electrodes) - set(pots))
    unknown = sorted(set(pots) - set(micro.electrodes))
    if unknown or missing:
        raise UserError(f"{args.microstructure} has electrodes {', '.join(micro.electrodes)}: "
                        + (f"unknown electrode '{unknown[0]}'" if unknown else f"no --potential for '{missing[0]}'"))
    names = list(grid[0])
    ref_params = sweep.reference_parameters(micro)
    electrodes = list(micro.electrodes)
    del micro                                     # the workers read the file themselves
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output folder: {exc.strerror}") from None
    mpath = str(Path(args.microstructure).resolve())
    mhash = content_hash(mpath)
    opts = {kw: getattr(args, dest) for dest, kw in SIMULATE_OPTIONS.items()}
    ref_combo = {n: ref_params[n] for n in names}
    combos = grid + ([] if ref_combo in grid else [ref_combo])

    def task(p):
        return sweep.SweepTask(microstructure=mpath, micro_hash=mhash, params=p, potentials=pots,
                               solutions_dir=str((out / "solutions").resolve()), sim_options=opts)

    results = {}
    with open_client(args.workers, args.scheduler, numba_cache=args.numba_cache) as client:
        for t, res in run_tasks(client, sweep.sweep_task, [task(p) for p in combos],
                                label=lambda t: ", ".join(f"{k}={v:g}" for k, v in t.params.items()),
                                desc="combinations", progress=not args.quiet,
                                status=lambda r: r["error"] and "error" or ("stored" if r["solves"] == 0 else "solved")):
            if isinstance(res, BaseException):
                res = dict(params=t.params, currents={}, gb={}, solves=0, worker="",
                           error=f"task failed: {type(res).__name__}: {res}")
            results[tuple(sorted(t.params.items()))] = res

    def get(p):
        return results[tuple(sorted(p.items()))]

    ordered = [get(p) for p in grid]
    reference = get(ref_combo)
    cur_cols = [f"current_{e}_A" for e in electrodes]
    rows = []
    for r in ordered:
        row = dict(r["params"], worker=r["worker"])
        row.update({f"current_{e}_A": r["currents"].get(e, float("nan")) for e in electrodes})
        rows.append(row)
    sweep_csv = write_table(rows, out / "sweep.csv", names + cur_cols + ["worker"])
    gb_cols = [c for c in GB_COLUMNS if any(c in r["gb"] for r in ordered)] or list(GB_COLUMNS)
    gb_rows = [row for r in ordered if not r["error"] for row in sweep.gb_rows(r["params"], r["gb"], gb_cols)]
    gb_csv = write_table(gb_rows, out / "gb_sweep.csv", names + gb_cols + [sweep.RANK_COLUMN])
    failed = [r for r in ordered if r["error"]]
    if reference["error"]:
        print(f"warning: the reference combination failed ({reference['error']}): no stability figures",
              file=sys.stderr)
        html_path = None
    else:
        html_path = sweep.write_sweep_html(out / "sweep.html", names, ref_params, reference["gb"], ordered,
                                           k=args.top_k)
    solves = sum(r["solves"] for r in results.values())
    print(f"{len(grid)} combinations ({len(failed)} failed), {solves} linear solve(s), "
          f"{len(results) - solves - len(failed)} reused from {out / 'solutions'} -> {out}")
    for r in failed:
        print(f"  {', '.join(f'{k}={v:g}' for k, v in r['params'].items())}: {r['error']}", file=sys.stderr)
    print(f"  tables: {sweep_csv}, {gb_csv}" + (f"\n  figures: {html_path}" if html_path else ""))
    return EXIT_USER if failed else EXIT_OK
