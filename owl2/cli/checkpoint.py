"""`owl2 checkpoint`: checkpoint tools (`owl2 checkpoint verify DIR`).

`verify` checks a training checkpoint against its `manifest.json` (`owl2.train.manifest`, the same
check a resumed run makes before loading): DIR is one checkpoint folder or a run folder, whose
`checkpoint-<step>/` folders are each checked. It prints one line per problem (`PATH: reason`: no
manifest, a file missing, of the wrong size or with another SHA-256), then a summary; the exit status
is 1 if any checkpoint is damaged, 0 if none. A DIR that is neither is a usage error (one line on
stderr, status 2). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from owl2.cli.main import UsageError
from owl2.train.manifest import MANIFEST_FILE, checkpoint_folders, format_bytes, manifest_size, verify

CHECKPOINT_MARKERS = (MANIFEST_FILE, "trainer_state.json", "engine")
"""Entries that make a folder a checkpoint rather than a run folder."""


def add_parser(subparsers) -> None:
    """Register `owl2 checkpoint` and its subcommands."""
    parser = subparsers.add_parser("checkpoint", help="inspect training checkpoints")
    commands = parser.add_subparsers(dest="checkpoint_command", metavar="SUBCOMMAND", required=True)
    check = commands.add_parser(
        "verify", help="check checkpoint files against their manifest (sizes and SHA-256)",
        description="Check a checkpoint-<step>/ folder, or every one in a run folder, against its manifest.json.",
    )  # fmt: skip
    check.add_argument("folder", type=Path, help="a checkpoint-<step>/ folder or a run's output_dir")
    check.set_defaults(func=run_verify)


def is_checkpoint_folder(folder: Path) -> bool:
    """Whether `folder` is one checkpoint (named like one, or holding a manifest, trainer state or engine state)."""
    return folder.name.startswith(("checkpoint-", ".checkpoint-")) or any(
        (folder / name).exists() for name in CHECKPOINT_MARKERS
    )


def run_verify(args: argparse.Namespace) -> int:
    """Print one line per problem and a summary; 1 if any checkpoint is damaged, else 0."""
    folder = args.folder
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    targets = [folder] if is_checkpoint_folder(folder) else checkpoint_folders(folder)
    if not targets:
        raise UsageError(f"{folder}: neither a checkpoint (no {MANIFEST_FILE}) nor a run folder "
                         "(no checkpoint-<step>/ in it)")
    damaged = 0
    for target in targets:
        problems = verify(target)
        for problem in problems:
            print(problem, flush=True)
        damaged += bool(problems)
        if not problems and len(targets) == 1:
            print(f"{target}: good ({format_bytes(manifest_size(target) or 0)})")
    if len(targets) > 1:
        print(f"{folder}: {len(targets)} checkpoints, {len(targets) - damaged} good, {damaged} damaged")
    return 1 if damaged else 0
