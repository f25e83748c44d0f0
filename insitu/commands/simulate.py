"""``insitu simulate``: run the resistor-network transport simulator on a microstructure file."""
from __future__ import annotations

import sys
import warnings

from insitu.core.errors import UserError

HELP = "Run the resistor-network transport simulator on a microstructure file"
DESCRIPTION = """Run the transport simulator (docs/simulator.md: the model and its limits) on a microstructure file.

Writes OUT/result.h5 (potential, current_density, field, electrode_current/<name>) and
OUT/gb.csv (grain_a, grain_b, length_m, j_a, j_b, jump, delta_phi, gb_type,
misorientation_deg, plane_angle_deg, blocking, then jump_flow, blockade, applied_field_deg,
local_field_deg, normal_deg, theta_a_deg, theta_b_deg; docs/simulator.md). GB types are
classified against the applied field (uniform isotropic lamella, same electrodes). The problem
is linear: results for another bias are the same solution scaled (SimulationResult.scaled).

example:
  insitu simulate micro.h5 --potential top=0 --potential right=1 --out sim --plots
"""


def add_arguments(parser):
    parser.add_argument("microstructure", help="microstructure HDF5 file (layout in docs/simulator.md)")
    parser.add_argument("--potential", action="append", default=[], metavar="NAME=VOLTS",
                        help="potential of an electrode (repeat for each electrode)")
    parser.add_argument("--out", required=True, help="output folder (written complete or not at all)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder as a whole")
    parser.add_argument("--model", choices=("full", "paper", "diagonal"), default="full",
                        help="full: the thin-film 2x2 conductivity tensor, J_z = 0 (default); paper: the seed "
                             "paper's sigma_x, sigma_y from the conduction-plane trace; diagonal: deprecated "
                             "alias of paper")
    parser.add_argument("--plots", action="store_true", help="also write PNG figures")
    parser.add_argument("--gb-tol", type=float, default=15.0, metavar="DEG",
                        help="tolerance of GB types I/II in degrees (default 15)")
    parser.add_argument("--beam-tol", type=float, default=15.0, metavar="DEG",
                        help="grains with c within DEG of the beam have no plane trace: their GBs are "
                             "'no trace', never blocking (default 15)")
    parser.add_argument("--solver", choices=("auto", "direct", "mg", "amg"), default="auto",
                        help="linear solver (default: direct up to 150k unknowns, else multigrid-CG)")
    parser.add_argument("--rtol", type=float, default=1e-8, help="relative residual of the iterative solve")
    parser.add_argument("--refine", default="1", metavar="R|auto",
                        help="solve on an R x finer grid with sub-voxel grain boundaries (full model: laminate "
                             "tensors where they cut a voxel; GB table per GB of the map, from the fine grid; "
                             "result.h5 maps are block means on the map's grid); auto: the full model refined until "
                             "its GB bands are ~20 voxels wide, fine grid capped at 2048^2 and R <= 8 (time and "
                             "memory grow R^2; default 1: no refinement)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) when a conducting cluster touches no electrode instead of excluding it")


def parse_refine(text):
    """``"auto"`` or a whole number >= 1 (as int); UserError otherwise.

    >>> parse_refine("4"), parse_refine("auto")
    (4, 'auto')
    """
    t = str(text).strip().lower()
    if t == "auto":
        return t
    try:
        r = int(t)
    except ValueError:
        raise UserError(f"--refine {text}: use a whole number >= 1 or auto") from None
    if r < 1:
        raise UserError(f"--refine {text}: use a whole number >= 1 or auto")
    return r


def parse_potentials(items) -> dict:
    """``["top=0", "right=1.5"]`` -> ``{"top": 0.0, "right": 1.5}``; UserError on bad items."""
    pots = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--potential expects NAME=VOLTS, got '{item}'")
        try:
            v = float(val)
        except ValueError:
            raise UserError(f"--potential {name}: '{val}' is not a number (volts)") from None
        if name.strip() in pots:
            raise UserError(f"--potential given twice for electrode '{name.strip()}'")
        pots[name.strip()] = v
    return pots


def run(args) -> int:
    from insitu.core.jit_notice import compile_notice
    from insitu.analysis.transport import network
    from insitu.analysis.transport.microstructure import read_microstructure
    from insitu.analysis.transport.simulator import floating_message, gb_resolution_note, save_result, simulate

    from insitu.core.outputs import check_target

    check_target(args.out, args.overwrite, folder=True)  # before a long solve, not after
    if not args.rtol > 0 or not args.rtol < 1:
        raise UserError(f"--rtol {args.rtol}: must be between 0 and 1 (a relative residual)")
    if not args.gb_tol >= 0:
        raise UserError(f"--gb-tol {args.gb_tol}: must be >= 0 degrees")
    refine = parse_refine(args.refine)
    pots = parse_potentials(args.potential)
    if not pots:
        raise UserError("give the electrode potentials, e.g. --potential top=0 --potential right=1")
    micro = read_microstructure(args.microstructure)
    if args.model == "diagonal":
        print("warning: --model diagonal is deprecated: it is the paper's model, now --model paper", file=sys.stderr)
    compile_notice("insitu simulate")            # after the input checks: a bad input stays a one-line error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # said below, once, in the command's own words
        result = simulate(micro, pots, model=network.model_name(args.model), gb_tol_deg=args.gb_tol,
                          beam_tol_deg=args.beam_tol, solver=args.solver, rtol=args.rtol, refine=refine)
    if result.floating:
        msg = floating_message(result.floating)
        if args.strict:
            raise UserError(msg)
        print(f"warning: {msg} (excluded)", file=sys.stderr)
    from pathlib import Path

    from insitu.core.outputs import output_dir

    out = Path(args.out)
    with output_dir(out, args.overwrite) as tmp:  # renamed to OUT when complete
        paths = save_result(result, tmp)
        if args.plots:
            from insitu.analysis.transport.simulator_plots import plot_result

            paths.update(plot_result(result, micro, tmp))
    paths = {k: out / Path(p).relative_to(tmp) if isinstance(p, (str, Path)) else p for k, p in paths.items()}
    i = result.info
    print(f"model {result.model}: {i['unknowns']} unknowns, solver {i['method']}, "
          f"{i['t_solve_s']:.2f} s solve; thickness {micro.thickness_m:.4g} m")
    if "refine_note" in i:
        print(f"  refine {refine}: {i['refine_note']}")
    for name, cur in result.electrode_current.items():
        print(f"  electrode {name}: {result.potentials[name]:+.6g} V, current {cur:+.6e} A")
    if result.conductance_S is not None:
        print(f"  conductance {result.conductance_S:.6e} S")
    gt = result.gb_table
    if len(gt["grain_a"]):
        import numpy as np

        order = np.argsort(-np.abs(gt["jump"]))[:5]
        print(f"  {len(gt['grain_a'])} grain boundaries; largest current jumps:")
        for k in order:
            print(f"    G{gt['grain_a'][k]}/G{gt['grain_b'][k]}  jump {gt['jump'][k]:+.3e} A/m^2  "
                  f"{gt['gb_type'][k]}{'  (blocking)' if gt['blocking'][k] else ''}")
        note = gb_resolution_note(result)
        if note:
            print(f"  {note}")
    for p in paths.values():
        print(f"wrote {p}")
    return 0
