"""The baseline of ``bench_simulator``: ``insitu simulate`` with the linear solve of the paper's
network done the slow, independent way (``tests/network_oracles.reference_solver``: the network
assembled link by link with scipy.sparse, pyamg Ruge-Stueben + CG); the rest of the command
(reading, the applied-field solve, done the same way, GB table, writing) is the real one, except
that the baseline solves the applied field on the map's own grid, as it did when the goals were set
(the command's coarser applied-field grid, ``coarse.applied_factor``, is one of its own speed-ups,
not the baseline's).

Run as ``python bench/simulate_baseline.py simulate MICRO --potential ... --out DIR --model paper``
(the arguments of ``insitu simulate``; ``--solver`` is replaced). With the environment variable
``INSITU_BASELINE_APPLIED=coarse`` the baseline solves its applied field on the command's coarser
grid instead (same speed-up as the command: the ratio of the solvers alone, shown beside the other).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import network_oracles

    from insitu.analysis.transport import coarse, simulator
    from insitu.cli import build_parser

    simulator.SOLVERS["reference"] = network_oracles.reference_solver
    if os.environ.get("INSITU_BASELINE_APPLIED", "fine") != "coarse":
        coarse.applied_factor = lambda shape: 1  # the applied field on the map's grid (see above)
    args = build_parser().parse_args(argv)
    args.solver = "reference"
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
