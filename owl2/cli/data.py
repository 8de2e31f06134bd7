"""`owl2 data`: data set tools (`owl2 data check DATA --image-folder DIR`).

`check` reads every record and input file with `owl2.data.checks` (the same validation training
applies; OneLLM's inputs against the release's sizes, or a model folder's with `--model`), prints one
line per bad record (`line N: reason`, or `record N: reason` for a JSON array), then a summary; the exit status is 1 if any record is bad, 0 if none. A data file that
does not exist or is not `.json`/`.jsonl` is a usage error (one line on stderr, status 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from owl2.cli.main import UsageError
from owl2.data.checks import iter_problems
from owl2.data.records import DataFileError, RecordFile


def add_parser(subparsers) -> None:
    """Register `owl2 data` and its subcommands."""
    parser = subparsers.add_parser("data", help="inspect and validate data sets")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    check = commands.add_parser("check", help="validate every record and image of a .json/.jsonl file")
    check.add_argument("data", type=Path, help="LLaVA-style .json (array) or .jsonl file")
    check.add_argument(
        "--image-folder", type=Path, default=None, help="folder image paths are relative to (default: the data file's)"
    )
    check.add_argument(
        "--model", type=Path, default=None,
        help="a OneLLM model folder: check inputs against its media_config.json (default: the release's sizes)",
    )  # fmt: skip
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Print one line per bad record and a summary; 1 if any is bad, else 0."""
    if not args.data.is_file():
        raise UsageError(f"{args.data}: no such data file")
    if args.data.suffix.lower() not in (".json", ".jsonl"):
        raise UsageError(f"{args.data}: expected a .json or .jsonl file")
    image_folder = args.image_folder if args.image_folder is not None else args.data.parent
    if not image_folder.is_dir():
        raise UsageError(f"{image_folder}: no such image folder")
    media_config = None
    if args.model is not None:
        from owl2.processing.media.config import MediaConfig  # torch-free

        try:
            media_config = MediaConfig.from_pretrained(args.model)
        except FileNotFoundError as e:
            raise UsageError(f"{e}; expected a OneLLM model folder") from None
    try:
        records = RecordFile(args.data)
    except DataFileError as e:  # the whole file is one bad record
        print(e.reason)
        print(f"{args.data}: unreadable, 0 good records")
        return 1
    bad = 0
    for problem in iter_problems(records, image_folder, media_config):
        print(problem, flush=True)
        bad += 1
    print(f"{args.data}: {len(records)} records, {len(records) - bad} good, {bad} bad")
    return 1 if bad else 0
