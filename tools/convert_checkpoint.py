"""Convert checkpoints between the official mPLUG-Owl2 release, LLaMA-2 + CLIP, and owl2 (all offline, local folders).

Usage:
    python tools/convert_checkpoint.py mplug-owl2 SRC DST          official folder -> Owl2Model folder
    python tools/convert_checkpoint.py init --llm LLAMA_DIR --vision CLIP_DIR --out DST
                                                                   LLaMA-2 + CLIP ViT -> fresh Owl2Model folder
    python tools/convert_checkpoint.py to-mplug-owl2 SRC DST       Owl2Model folder -> official folder

The work is done by `owl2.checkpoint.convert`; this script only parses arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from owl2.checkpoint.convert import convert_official, export_official, init_from_llama_clip
from owl2.checkpoint.io import DEFAULT_MAX_SHARD_BYTES, CheckpointError


def _size(text: str) -> int:
    """'5GB', '500MB', '1024' -> bytes."""
    units = {"KB": 2**10, "MB": 2**20, "GB": 2**30}
    text = text.strip().upper()
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convert_checkpoint.py", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--max-shard-size", type=_size, default=DEFAULT_MAX_SHARD_BYTES, help="largest output shard (e.g. 5GB)")
    common.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    commands = parser.add_subparsers(dest="command", required=True)

    official = commands.add_parser("mplug-owl2", parents=[common], help="official mPLUG-Owl2 folder -> owl2 folder")
    official.add_argument("src")
    official.add_argument("dst")

    init = commands.add_parser("init", parents=[common], help="LLaMA-2 + CLIP -> a fresh owl2 folder")
    init.add_argument("--llm", required=True, help="a transformers LlamaForCausalLM folder")
    init.add_argument("--vision", required=True, help="a transformers CLIPVisionModel or CLIPModel folder")
    init.add_argument("--out", required=True)
    init.add_argument("--abstractor", type=json.loads, default=None, help='abstractor overrides, JSON (e.g. \'{"num_queries": 64}\')')
    init.add_argument("--seed", type=int, default=0, help="seed of the abstractor's initialisation")

    export = commands.add_parser("to-mplug-owl2", parents=[common], help="owl2 folder -> official mPLUG-Owl2 folder")
    export.add_argument("src")
    export.add_argument("dst")
    export.add_argument("--format", choices=["safetensors", "bin"], default="safetensors", help="weight file format")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = dict(max_shard_bytes=args.max_shard_size, overwrite=args.overwrite, progress=not args.no_progress)
    try:
        if args.command == "mplug-owl2":
            out = convert_official(args.src, args.dst, **options)
        elif args.command == "init":
            out = init_from_llama_clip(args.llm, args.vision, args.out, abstractor=args.abstractor, seed=args.seed, **options)
        else:
            out = export_official(args.src, args.dst, weights_format=args.format, **options)
    except (CheckpointError, FileExistsError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
