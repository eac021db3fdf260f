"""The `evtransfer` command: one module per command group, one error boundary here.

Each group module has `add(sub)` registering its subcommands; each subcommand sets
`run=<function(args) -> int>`. Heavy imports (torch, the methods) happen inside the run
functions, so `--help` and argument errors stay fast. `main` is the only place that turns the
library's exceptions into a one-line message and an exit code (2; 130 for Ctrl-C); `--debug`
re-raises them with their traceback.
"""

from __future__ import annotations

import argparse
import sys
import zipfile

from evtransfer import __version__
from evtransfer.cli import inference, io, simulate, train, weights, world

# Exceptions that mean "bad input or environment", not "bug": ValueError covers the
# library's own (ConfigError, FormatError, CheckpointError, SimulationError, EventsError),
# OSError covers missing, unreadable, unwritable and directory-instead-of-file paths.
USER_ERRORS = (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="evtransfer",
        description="Dense perception for event and spike cameras by transfer from labeled RGB.",
    )
    parser.add_argument("--version", action="version", version=f"evtransfer {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (train.add_demo, simulate.add, io.add, world.add, train.add, inference.add,
                weights.add):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default `sys.argv[1:]`); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"evtransfer {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"evtransfer {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (KeyError quotes its key; OSError names its file)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror.lower()}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
