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
from evtransfer.cli._args import check_device, check_out
from evtransfer.cli._record import print_config

# Exceptions that mean "bad input or environment", not "bug": ValueError covers the
# library's own (ConfigError, FormatError, CheckpointError, SimulationError, EventsError),
# OSError covers missing, unreadable, unwritable and directory-instead-of-file paths;
# ModuleNotFoundError an optional package a file format needs (the message says which).
USER_ERRORS = (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError, ModuleNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="evtransfer",
        description="Dense perception for event and spike cameras by transfer from labeled RGB.",
    )
    parser.add_argument("--version", action="version", version=f"evtransfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (train.add_demo, simulate.add, io.add, world.add, train.add, inference.add,
                weights.add):
        add(sub)
    for p in _all_parsers(parser):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error instead of one line")
        if p is not parser and not _has_subcommands(p):
            p.add_argument("--print-config", action="store_true",
                           help="print the resolved config (or options) and exit")
    return parser


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and its subcommands' parsers, recursively (so `--debug` goes anywhere)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _all_parsers(child)
    return found


def _has_subcommands(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default `sys.argv[1:]`); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False)
    name = " ".join(str(v) for v in (args.command, getattr(args, "sensor", None),
                                      getattr(args, "verb", None), getattr(args, "kind", None))
                    if v is not None)
    try:
        if getattr(args, "print_config", False):
            print_config(args)
            return 0
        check_out(args)
        if getattr(args, "device", "cpu") != "cpu":  # cpu needs no check (nor torch import)
            check_device(args.device)
        code = int(args.run(args) or 0)
        _print_stage_table()
        return code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"evtransfer {name}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"evtransfer {name}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _print_stage_table() -> None:
    """The table of the training stages this command ran (none: nothing printed)."""
    logging = sys.modules.get("evtransfer.engine.logging")  # loaded only if something trained
    table = logging.stage_table() if logging is not None else ""
    if table:
        # on stderr with the progress lines: stdout stays the command's results (its JSON)
        print(f"training stages run by this command:\n{table}", file=sys.stderr)
    if logging is not None:
        logging.STAGES.clear()


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (KeyError quotes its key; OSError names its file)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror.lower()}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
