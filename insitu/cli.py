"""The ``insitu`` command line: one verb per module in :mod:`insitu.commands`.

Each verb module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules import their heavy dependencies inside ``run`` so
that ``insitu --help`` stays fast.

Errors follow one convention (see :mod:`insitu.core.errors`): a one-line message on
stderr and exit 1 (user error), 2 (instrument fault) or 3 (stopped early);
``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from insitu import __version__
from insitu.core.errors import EXIT_OK, EXIT_STOPPED, EXIT_USER, InsituError

#: verb -> module name in insitu.commands
VERBS = {
    "run": "run",
    "validate": "validate",
    "info": "info",
    "check": "check",
    "replay": "replay",
    "import": "import_",
    "export": "export",
    "analyze": "analyze",
    "simulate": "simulate",
    "microstructure": "microstructure",
    "gui": "gui",
    "demo": "demo",
    "batch": "batch",
    "sweep": "sweep",
}


class _Parser(argparse.ArgumentParser):
    """argparse with exit code 1 (user error) for bad arguments, as every other user error."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="insitu",
        description="In-situ biasing experiments in the STEM: control, record, see, analyse, replay.",
    )
    parser.add_argument("--version", action="version", version=f"insitu {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, modname in VERBS.items():
        mod = importlib.import_module(f"insitu.commands.{modname}")
        p = sub.add_parser(verb, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors")
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return EXIT_USER
    debug = getattr(args, "debug", False)
    try:
        return int(args._module.run(args) or 0)
    except InsituError as exc:
        if debug:
            raise
        print(f"insitu {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"insitu {args.verb}: interrupted", file=sys.stderr)
        return EXIT_STOPPED
    except BrokenPipeError:
        # output piped into a reader that went away (``insitu validate X | head``): not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK


def console_main() -> int:
    """The ``insitu`` program (console script and ``python -m insitu.cli``): :func:`main`, then
    :func:`gc.freeze`, because the process ends next.

    At exit the interpreter searches for reference cycles among every object still alive, several
    times; after numba, scipy and h5py have been imported that takes about 0.3 s of every command.
    Frozen objects are left out of that search: their memory goes back to the system with the
    process, and files and instruments are closed by the commands themselves, as before.
    """
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
