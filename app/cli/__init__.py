"""Command line: ``python main.py [SUBCOMMAND] ...`` (also the ``matchgen`` console script).

Each subcommand lives in its own module here with ``HELP``, ``configure(parser)`` and ``run(args) -> int``;
the modules import heavy libraries (torch, Qt) inside ``run`` so that ``--help`` is instant. Errors the user
can cause (:class:`app.errors.MatchGenError`) end with exit code 2 and one line on stderr, never a traceback.
Python warnings (``warnings.warn``: a broken model plug-in, the solver's RuntimeWarnings, a library's) are one
``warning: ...`` line on stderr each too, not Python's ``file:line: Category: message`` plus source line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from app import __version__
from app.errors import MatchGenError

#: subcommand name -> module (in the order ``--help`` lists them)
COMMANDS: dict[str, str] = {
    "models": "app.cli.models",
    "data": "app.cli.data",
    "detect": "app.cli.detect",
    "batch": "app.cli.batch",
    "train": "app.cli.train",
    "calibrate": "app.cli.calibrate",
    "view": "app.cli.view",
    "figure": "app.cli.figure",
    "bench": "app.cli.bench",
    "pacs": "app.cli.pacs",
}

#: what ``python main.py`` with no subcommand runs, if that subcommand exists
DEFAULT_COMMAND = "view"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr with exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="matchgen",
        description="MatchGen Viewer: unsupervised anomaly detection in medical images with test-time "
        "matched pseudo-normal images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, modname in COMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the command line: ``warning: MESSAGE`` on one line of stderr."""
    text = " ".join(str(message).split()) or category.__name__
    try:
        (file or sys.stderr).write(f"warning: {text}\n")
    except (OSError, ValueError):  # stderr closed: a warning is never worth a crash
        pass


def main(argv: Sequence[str] | None = None) -> int:
    with warnings.catch_warnings():  # restores Python's own printer afterwards (main is also called in-process)
        warnings.showwarning = _warning_line
        try:
            code = _main(argv)
            sys.stdout.flush()  # a closed pipe shows here, not as a traceback at interpreter exit
            return code
        except BrokenPipeError:
            # the reader went away (``matchgen models | head -1``): stop quietly, as other command-line tools do
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return 1


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv and DEFAULT_COMMAND in COMMANDS:
        argv = [DEFAULT_COMMAND]
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except MatchGenError as exc:
        sys.stderr.write(f"matchgen {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
