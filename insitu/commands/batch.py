"""``insitu batch analyze``: analyse many sessions on dask.distributed, one table and one page for all."""
from __future__ import annotations

import argparse
import sys

from insitu.core.errors import EXIT_OK, EXIT_USER, UserError

HELP = "Analyse many sessions in parallel (dask.distributed): batch.csv, batch.html"
DESCRIPTION = """\
insitu batch analyze SESSION_OR_FOLDER... --out DIR [--workers N | --scheduler ADDRESS]

Each session (a session file, or a folder of frames; a folder holding *.h5 files gives each of
them) is analysed as one task, exactly as 'insitu analyze' does, into DIR/<session stem>/.
DIR/batch.csv has one row per session: session, status (ok | error), error, n_frames, n_seeds,
first_seed_time_s, bias_at_first_seed_V, dose_at_first_seed, auc, p_value, worker (the dask
worker that ran it). DIR/batch.html shows seeds against time, charge and dose per session, the
bias at the first seed, and beam-on against beam-blank pairs.

A session that fails is reported in its row and the others go on; the exit code is then 1.
A re-run skips sessions whose content and options have not changed (their rows are kept) unless
--force. The engine is an embedded dask LocalCluster (processes, one thread each) unless
--scheduler names a running scheduler (docs/scale-out.md).

examples:
  insitu batch analyze sessions/ --out batch/ --workers 4
  insitu batch analyze a.h5 b.h5 --out batch/ --microstructure micro.h5 --simulation sim/
  insitu batch analyze sessions/ --out batch/ --scheduler tcp://labserver:8786
"""

#: options of ``insitu analyze`` that a batch passes to every session
ANALYZE_OPTIONS = ("microstructure", "simulation", "map_transform", "threshold", "persistence", "sigma_px")


def add_engine_arguments(parser) -> None:
    """``--workers N | --scheduler ADDRESS``, ``--numba-cache DIR``, ``--quiet`` (batch and sweep)."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, metavar="N",
                   help="worker processes of the embedded local cluster (default: the usable cores)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running dask scheduler, e.g. tcp://labserver:8786 (nothing is started there)")
    parser.add_argument("--numba-cache", metavar="DIR",
                        help="numba's compiled-kernel cache for the workers (a shared path; default "
                             "$INSITU_NUMBA_CACHE, else numba's own)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def add_arguments(parser):
    from insitu.commands import analyze as analyze_cmd

    sub = parser.add_subparsers(dest="batch_verb", metavar="ANALYSIS", parser_class=type(parser))
    sub.required = True
    p = sub.add_parser("analyze", help="analyse every session as 'insitu analyze' does",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    p.add_argument("inputs", nargs="+", metavar="SESSION_OR_FOLDER", help="session files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    # the options of 'insitu analyze', taken from its own parser so that both stay the same
    single = argparse.ArgumentParser(add_help=False)
    analyze_cmd.add_arguments(single)
    for action in single._actions:
        if action.dest in ANALYZE_OPTIONS:
            p._add_action(action)
    p.add_argument("--force", action="store_true", help="analyse again sessions already done")
    add_engine_arguments(p)


def analyze_options(args) -> dict:
    """Keyword arguments of :func:`insitu.analysis.pipeline.analyze` from the parsed options."""
    from insitu.commands.analyze import check_options

    tr = check_options(args)
    if (args.microstructure is None) != (args.simulation is None):
        raise UserError("the correlation needs both --microstructure and --simulation")
    opts = dict(threshold=args.threshold, persistence=args.persistence, sigma_px=args.sigma_px)
    if args.microstructure:
        opts.update(microstructure=args.microstructure, simulation=args.simulation)
    if tr is not None:
        opts["map_transform"] = tr
    return opts


def run(args) -> int:
    from pathlib import Path

    from insitu.analysis import batch
    from insitu.core.scaleout import open_client, run_tasks

    opts = analyze_options(args)
    for k in ("microstructure", "simulation"):
        if opts.get(k):
            opts[k] = str(Path(opts[k]).resolve())
            if not Path(opts[k]).exists():
                raise UserError(f"--{k} {opts[k]}: no such file or folder")
    inputs = batch.collect_inputs(args.inputs)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output folder: {exc.strerror}") from None
    tasks = [batch.BatchTask(input=str(p.resolve()), out_dir=str((out / p.stem).resolve()), options=opts,
                             force=args.force) for p in inputs]
    results = {}
    try:
        with open_client(args.workers, args.scheduler, numba_cache=args.numba_cache) as client:
            for task, res in run_tasks(client, batch.analyze_task, tasks, label=lambda t: Path(t.input).name,
                                       desc="sessions", progress=not args.quiet,
                                       status=lambda r: "skipped (done before)" if r["skipped"] else r["row"]["status"]):
                if isinstance(res, BaseException):
                    res = batch.error_result(task, res)
                results[task.input] = res
    finally:
        # also when stopped early (Ctrl-C, a lost scheduler): the table holds what finished
        ordered = [results.get(t.input) or batch.error_result(t, RuntimeError("not finished (the batch stopped)"))
                   for t in tasks]
        rows = [r["row"] for r in ordered]
        for r, p in zip(rows, inputs):         # the session as the user named it, not the resolved path
            r["session"] = str(p)
        csv_path = batch.write_table(rows, out / "batch.csv", batch.BATCH_COLUMNS)
    html_path = batch.write_batch_html(out / "batch.html", rows, [r["figure"] for r in ordered])
    failed = [r for r in rows if r["status"] != "ok"]
    skipped = sum(r["skipped"] for r in ordered)
    print(f"{len(rows)} sessions: {len(rows) - len(failed) - skipped} analysed, {skipped} unchanged (skipped), "
          f"{len(failed)} failed -> {out}")
    for r in failed:
        print(f"  {r['error']}" if r['session'] in r['error'] else f"  {r['session']}: {r['error']}", file=sys.stderr)
    print(f"  table: {csv_path}\n  figures: {html_path}")
    return EXIT_USER if failed else EXIT_OK
