"""Convert checkpoints between the official mPLUG-Owl2 and OneLLM releases, LLaMA-2 + CLIP, and owl2 (offline).

Usage:
    python tools/convert_checkpoint.py mplug-owl2 SRC DST          official folder -> Owl2Model folder
    python tools/convert_checkpoint.py init --llm LLAMA_DIR --vision CLIP_DIR --out DST
                                                                   LLaMA-2 + CLIP ViT -> fresh Owl2Model folder
    python tools/convert_checkpoint.py to-mplug-owl2 SRC DST       Owl2Model folder -> official folder
    python tools/convert_checkpoint.py onellm SRC DST [--clip-config FILE] [--clip-weights FILE]
                                                                   OneLLM release folder -> OneLLMModel folder
    python tools/convert_checkpoint.py to-onellm SRC DST           OneLLMModel folder -> OneLLM release folder

The work is done by `owl2.checkpoint.convert` and `owl2.checkpoint.convert_onellm`; this script only parses arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from owl2.checkpoint.convert import convert_official, export_official, init_from_llama_clip
from owl2.checkpoint.convert_onellm import convert_onellm, export_onellm
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
    base = argparse.ArgumentParser(add_help=False)  # options of every command
    base.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    base.add_argument("--no-progress", action="store_true", help="no progress bar")
    common = argparse.ArgumentParser(add_help=False, parents=[base])  # ... and of every command that writes shards
    common.add_argument("--max-shard-size", type=_size, default=DEFAULT_MAX_SHARD_BYTES, help="largest output shard (e.g. 5GB)")
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

    onellm = commands.add_parser("onellm", parents=[common], help="OneLLM release folder -> OneLLMModel folder")
    onellm.add_argument("src", help="consolidated.00-of-01.pth, params.json, tokenizer.model")
    onellm.add_argument("dst")
    onellm.add_argument("--clip-config", help="open_clip model config JSON of CLIP (default: ViT-L-14, the release's)")
    onellm.add_argument("--clip-weights", help="open_clip CLIP state dict, for a release file saved without CLIP")
    onellm.add_argument(
        "--tokenizer-config", type=json.loads, default=None,
        help='modality-tokenizer fields the weights cannot tell, JSON (e.g. \'{"audio_num_frames": 512}\')',
    )  # fmt: skip

    to_onellm = commands.add_parser("to-onellm", parents=[base], help="OneLLMModel folder -> OneLLM release folder")
    to_onellm.add_argument("src")
    to_onellm.add_argument("dst")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = dict(overwrite=args.overwrite, progress=not args.no_progress)
    if args.command != "to-onellm":
        options["max_shard_bytes"] = args.max_shard_size
    try:
        if args.command == "mplug-owl2":
            out = convert_official(args.src, args.dst, **options)
        elif args.command == "init":
            out = init_from_llama_clip(args.llm, args.vision, args.out, abstractor=args.abstractor, seed=args.seed, **options)
        elif args.command == "to-mplug-owl2":
            out = export_official(args.src, args.dst, weights_format=args.format, **options)
        elif args.command == "onellm":
            out = convert_onellm(
                args.src, args.dst, clip_config=args.clip_config, clip_weights=args.clip_weights,
                tokenizer_config=args.tokenizer_config, **options,
            )  # fmt: skip
        else:
            out = export_onellm(args.src, args.dst, **options)
    except (CheckpointError, FileExistsError, ImportError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
