"""Entry point of the `owl2` command (no official counterpart; the official repo has scripts).

Each subcommand is a module with `add_parser(subparsers)`, which registers its parser and sets
`func(args) -> int` as the handler. Registering one is a one-line addition to `SUBCOMMANDS`.
Errors from bad user input are raised as `UsageError` (or the input errors listed in
`USER_ERRORS`) and printed as one line on stderr with exit status 2, never as a traceback. As a
bug can raise the same types, `OWL2_DEBUG=1` in the environment lets them through with their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from owl2.constants import debug_enabled

SUBCOMMANDS = [
    "owl2.cli.demo",
    "owl2.cli.train",
    "owl2.cli.chat",
    "owl2.cli.generate",
    "owl2.cli.eval",
    "owl2.cli.data",
    "owl2.cli.checkpoint",
]
"""Modules defining subcommands, in help order."""


class UsageError(Exception):
    """Bad user input a subcommand reports as one line (exit status 2)."""


USER_ERRORS = (UsageError, FileNotFoundError, NotADirectoryError, PermissionError, ValueError, KeyError)
"""Exceptions printed as one line instead of a traceback (unless `owl2.constants.DEBUG_ENV` is set)."""


def build_parser() -> argparse.ArgumentParser:
    """The `owl2` parser with every module in `SUBCOMMANDS` registered."""
    parser = argparse.ArgumentParser(prog="owl2", description="mPLUG-Owl2 on torch, transformers and timm")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `owl2` command.

    Args:
        argv: Arguments without the program name (defaults to `sys.argv[1:]`).

    Returns:
        The exit status (also raised as `SystemExit` by argparse on usage errors).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if debug_enabled():
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"owl2 {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
