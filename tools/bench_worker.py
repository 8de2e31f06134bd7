"""One contender of `tools/bench.py --official` in a process of its own: times a training step or a greedy
generation of an mPLUG-Owl2 folder, with owl2 or with the official code, and prints one JSON line.

    python tools/bench_worker.py --impl owl2 --model OWL2_DIR --work train
    OFFICIAL_VENV/bin/python tools/bench_worker.py --impl official --official-repo mPLUG-Owl/mPLUG-Owl2 \\
        --model OFFICIAL_DIR --work generate

The official side runs in the official code's own environment (torch 2.0.1, transformers 4.31): this file
imports nothing from owl2 there, needs nothing newer than Python 3.8, and builds its inputs with `random`, so
both sides see the same token ids whatever their torch. The images are random pixels of the model's size.

Each side steps with its own training stack's AdamW: owl2's trainer uses torch's fused AdamW on the CPU
(`owl2.train.engine`), the official trainer (transformers' Trainer, `optim="adamw_torch"`) `torch.optim.AdamW` as it
comes. `--work fwd_bwd` times the forward and backward alone, without the optimizer.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import torch

IMAGE_TOKEN_INDEX = -200  # the release's placeholder id (mplug_owl2/constants.py), owl2's default too


def inputs(batch: int, text: int, vocab: int, image_size: int, seed: int = 0):
    """`(batch, text)` ids with the image placeholder second, and `(batch, 3, S, S)` pixels, from `random`."""
    rng = random.Random(seed)
    ids = torch.tensor([[rng.randrange(3, vocab) for _ in range(text)] for _ in range(batch)])
    ids[:, 1] = IMAGE_TOKEN_INDEX
    pixels = torch.tensor([rng.gauss(0.0, 1.0) for _ in range(batch * 3 * image_size * image_size)])
    return ids, pixels.view(batch, 3, image_size, image_size)


def load(impl: str, model_dir: str, official_repo: str | None, compile_backend: str | None):
    """The model in train mode, its calls' keyword for the images, the vocabulary size and the image size."""
    if impl == "official":
        sys.path.insert(0, official_repo)
        from mplug_owl2.model import MPLUGOwl2LlamaForCausalLM

        model = MPLUGOwl2LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
        return model, "images", model.config.vocab_size, model.config.visual_config["visual_model"]["image_size"]
    from owl2 import Owl2Model

    model = Owl2Model.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.config._attn_implementation = "sdpa"
    if compile_backend:
        from owl2.compile import compile_blocks

        compile_blocks(model, backend=compile_backend)
    return model, "pixel_values", model.config.text_config.vocab_size, model.config.vision_config.image_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("owl2", "official"), required=True)
    parser.add_argument("--model", required=True, help="an Owl2Model folder (owl2) or an official folder (official)")
    parser.add_argument("--official-repo", help="the folder holding the official package mplug_owl2")
    parser.add_argument("--work", choices=("train", "fwd_bwd", "generate"), required=True)
    parser.add_argument("--compile-backend", help="owl2 only: compiled blocks (train) or compiled decoding (generate)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--text", type=int, default=191, help="text tokens per sample, the placeholder included")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--calls", type=int, default=3, help="timed calls after the warm-up ones")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.impl == "official" and not args.official_repo:
        parser.error("--impl official needs --official-repo")
    if args.impl == "official" and args.compile_backend:
        parser.error("--compile-backend is owl2's")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, image_key, vocab, image_size = load(args.impl, args.model, args.official_repo, args.compile_backend)

    if args.work in ("train", "fwd_bwd"):
        ids, pixels = inputs(args.batch, args.text, vocab, image_size)
        model.train()
        fused = {"fused": True} if args.impl == "owl2" else {}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, **fused) if args.work == "train" else None

        def call() -> None:
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids.clone(), **{image_key: pixels}).loss.backward()
            if optimizer is not None:
                optimizer.step()

    else:
        ids, pixels = inputs(1, args.text, vocab, image_size)
        model.eval()
        options = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                       use_cache=True, pad_token_id=0)  # fmt: skip
        if args.compile_backend:
            from owl2.compile import compile_for_generation

            options.update(compile_for_generation(model, args.compile_backend))
        tokens = {}

        def call() -> None:
            with torch.no_grad():
                out = model.generate(input_ids=ids, **{image_key: pixels}, **options)
            tokens["last"] = out[0, -args.new_tokens :].tolist()

    first = time.perf_counter()
    call()
    first = time.perf_counter() - first
    for _ in range(args.warmup - 1):
        call()
    samples = []
    for _ in range(args.calls):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    result = {"impl": args.impl, "work": args.work, "compiled": bool(args.compile_backend), "first_call_s": first,
              "samples": samples, "median_s": statistics.median(samples), "torch": torch.__version__}  # fmt: skip
    if args.work == "generate":
        result["tokens"] = tokens["last"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
