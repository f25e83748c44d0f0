"""The ``insitu`` command line: one verb per module in :mod:`insitu.commands`.

Each verb module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules import their heavy dependencies inside ``run`` so
that ``insitu --help`` stays fast.

Errors follow one convention (see :mod:`insitu.core.errors`): a one-line message on
stderr and exit 1 (user error), 2 (instrument fault) or 3 (stopped early);
``--debug`` shows the traceback.

Logging: the ``insitu`` loggers (``insitu.drivers`` logs every SCPI write and
read at DEBUG). On stderr only warnings show, as plain lines; ``--verbose``
shows everything from DEBUG up, SCPI traffic included, with times and logger
names. A run also writes a log file next to its session (:mod:`insitu.runner`).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
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
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="log everything on stderr, SCPI traffic included (DEBUG; also in a run's log file)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, modname in VERBS.items():
        mod = importlib.import_module(f"insitu.commands.{modname}")
        p = sub.add_parser(verb, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors")
        p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                       help="log everything on stderr, SCPI traffic included (DEBUG)")
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at the time (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


#: loggers whose lines belong in a session's log file (the run's own events): on stderr only with
#: --verbose, since their news reaches the operator through the status line and the exit message
_SESSION_LOGGERS = ("insitu.runner", "insitu.events")


def configure_logging(verbose: bool = False) -> logging.Handler:
    """Set up the ``insitu`` logger for the command line (replacing an earlier set-up): stderr shows
    warnings (plain lines), or with ``verbose`` everything from DEBUG up with times and logger names."""
    logger = logging.getLogger("insitu")
    for h in list(logger.handlers):
        if isinstance(h, _StderrHandler):
            logger.removeHandler(h)
    handler = _StderrHandler()
    if verbose:
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
                                               "%H:%M:%S"))
    else:
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(lambda r: not r.name.startswith(_SESSION_LOGGERS))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def _error_line(text: str) -> None:
    from insitu.core.progress import end_status_lines

    end_status_lines()   # a "\r frame N" progress text on a terminal ends before the message
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return EXIT_USER
    debug = getattr(args, "debug", False)
    configure_logging(getattr(args, "verbose", False))
    try:
        return int(args._module.run(args) or 0)
    except InsituError as exc:
        if debug:
            raise
        _error_line(f"insitu {args.verb}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        _error_line(f"insitu {args.verb}: interrupted")
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
