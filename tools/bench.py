"""Benchmark owl2 against transformers' LLaMA, side by side in one process (issue 7).

Sections (each prints table rows and fills one key of the JSON):
1. `overhead`: a training step (fwd+bwd) of `Owl2Model` on text only vs `LlamaForCausalLM` with the
   same weights (`llama_to_owl2`); and the decoder on a sequence holding image tokens (mixed
   modality routing) vs the same length of text.                                 goal <= 1.05
2. `generation`: greedy tokens/s with the KV cache at batch 1 and 8 vs `LlamaForCausalLM.generate`,
   a fixed number of new tokens (min_new_tokens = max_new_tokens).               goal >= 0.95
3. `end_to_end`: a training step (ViT + abstractor + decoder with images, AdamW) at a mid-size
   config: samples/s, tokens/s, peak memory (RSS on CPU, max_memory_allocated on GPU).
4. `abstractor`: LLM tokens and prefill FLOPs per image on the 7B preset, 65 abstractor tokens vs
   1,025 ViT tokens fed patch by patch (analytic, see `owl2.bench.prefill_flops`), and the formula
   checked against `FlopCounterMode` on the toy.
5. `packing`: packed (`owl2.data.packing`) vs padded training tokens/s on the synthetic instruction
   mix and on a LLaVA-665k-like length distribution.                            goal >= 1.3
6. `upm`: OneLLM's universal projection module, owl2's (the K experts as one batched computation, the last
   layer for the kept modality tokens only, the router table cached at inference) vs the release's loop
   (each expert over the whole sequence, one after another, the router run on every call), restated on the
   same modules and weights: inference forward and a training forward + backward.  goal >= 2
7. `compile`: `owl2.compile`, compiled against eager: the end-to-end training step and greedy decoding over a
   static cache, compile time reported apart from the steady state.              goal >= 1.5
8. `profile`: `torch.profiler` over the end-to-end training step (eager) and one greedy decoding step: the
   operators that take the most time, by self time, so the largest costs can be taken one by one.
9. `official` (only when asked, with `--official DIR --official-python PY`): owl2, eager and compiled, against
   the official code itself on the same checkpoint, each contender in processes of its own
   (`tools/bench_worker.py`), alternating, medians.                               goal >= 1.5

Method (`owl2.bench.time_alternating`): warm-up calls, then rounds alternating between contenders
(order flipped every round), median per contender, ratios of medians. Run it with:

    python tools/bench.py --quick --json bench.json       # 2-core CPU, about 3 minutes
    python tools/bench.py --device cuda --json bench.json  # GPU: bf16, larger dims

`--tiny` runs every section on toy dimensions in seconds (what the tests use); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from owl2 import Owl2Config, Owl2Model
from owl2.compile import compile_blocks, compile_for_generation
from owl2.config import OneLLMProjectionConfig
from owl2.bench import (
    abstractor_flops,
    counted_flops,
    lognormal_lengths,
    peak_memory_bytes,
    prefill_flops,
    ratio,
    reset_peak_memory,
    synchronize,
    time_alternating,
)
from owl2.checkpoint.llama import llama_to_owl2
from owl2.constants import IGNORE_INDEX, MODALITIES
from owl2.models.decoder import ModalityRouting
from owl2.models.upm import UniversalProjection

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("overhead", "generation", "end_to_end", "abstractor", "packing", "upm", "compile", "profile")
TEXT, IMAGE = MODALITIES.index("text"), MODALITIES.index("image")


@dataclass
class Size:
    """Dimensions and repeat counts of one benchmark mode."""

    name: str
    text: dict
    """LlamaConfig fields of the decoder (both contenders)."""
    batch: int
    seq: int
    """Tokens per training sequence."""
    text_prefix: int
    """Text tokens before the image in the mixed layout."""
    image_tokens: int
    """Image tokens in the mixed layout (65 = 64 queries + end-of-image)."""
    gen_batches: tuple[int, ...]
    gen_prompt: int
    gen_new_tokens: int
    vision: dict
    """Owl2VisionConfig fields of the end-to-end model."""
    abstractor: dict
    """Owl2AbstractorConfig fields of the end-to-end model."""
    e2e_text_tokens: int
    """Text tokens per end-to-end sample (plus one image)."""
    packing_samples: int
    """Samples per length distribution in the packing section."""
    packing_batch: int
    """Samples per padded batch in the packing section."""
    packing_repeats: int
    """Rounds of the packing section (each a pass over all its samples)."""
    upm: dict
    """OneLLMProjectionConfig fields of the UPM section."""
    upm_batch: int
    """Inputs per UPM call (each 1 + 256 CLIP tokens: CLIP-L/14 at 224 px)."""
    repeats: int
    warmup: int = 1
    dtype: str = "float32"


def _text(hidden: int, inter: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict:
    return dict(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, vocab_size=vocab, max_position_embeddings=4096, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip


SIZES = {
    "tiny": Size(
        name="tiny", text=_text(64, 172, 2, 4, 2, 256), batch=2, seq=48, text_prefix=4, image_tokens=17,
        gen_batches=(1, 2), gen_prompt=8, gen_new_tokens=3,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28),
        abstractor=dict(num_queries=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        e2e_text_tokens=16, packing_samples=8, packing_batch=4, packing_repeats=1, repeats=2,
        upm=dict(num_experts=3, num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                 num_modality_tokens=4, router_hidden_size=64), upm_batch=2,
    ),  # fmt: skip
    "quick": Size(
        name="quick", text=_text(256, 688, 4, 4, 4, 4096), batch=2, seq=512, text_prefix=16, image_tokens=65,
        gen_batches=(1, 8), gen_prompt=32, gen_new_tokens=32,
        vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, image_size=224),
        abstractor=dict(num_queries=64, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=704),
        e2e_text_tokens=128, packing_samples=24, packing_batch=8, packing_repeats=3, repeats=7,
        upm=dict(num_experts=3, num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=704,
                 num_modality_tokens=30, router_hidden_size=1024), upm_batch=4,
    ),  # fmt: skip
    "gpu": Size(
        name="gpu", text=_text(2048, 5504, 8, 16, 16, 32000), batch=4, seq=2048, text_prefix=32, image_tokens=65,
        gen_batches=(1, 8), gen_prompt=128, gen_new_tokens=128,
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=16, image_size=448),
        abstractor=dict(num_queries=64, hidden_size=1024, num_hidden_layers=6, num_attention_heads=16, intermediate_size=2816),
        e2e_text_tokens=512, packing_samples=256, packing_batch=16, packing_repeats=3, repeats=10, warmup=3, dtype="bfloat16",
        upm=dict(num_experts=3, num_hidden_layers=8, hidden_size=1024, num_attention_heads=16, intermediate_size=2816,
                 num_modality_tokens=30, router_hidden_size=4096), upm_batch=16,
    ),  # fmt: skip
}


@dataclass
class Row:
    """One line of the printed table."""

    section: str
    metric: str
    owl2: float | None = None
    reference: float | None = None
    ratio: float | None = None
    goal: str = ""
    note: str = ""


@dataclass
class Context:
    size: Size
    device: torch.device
    dtype: torch.dtype
    rows: list[Row] = field(default_factory=list)
    compile_backend: str = "inductor"


# -- models --------------------------------------------------------------------------------------------


def owl2_config(size: Size, toy_vision: bool = True) -> Owl2Config:
    """An `Owl2Config` whose decoder has the benchmark dims; the toy ViT/abstractor unless asked otherwise."""
    toy = json.loads((REPO / "configs" / "model" / "owl2-toy.json").read_text())
    vision = toy["vision_config"] if toy_vision else {**toy["vision_config"], **size.vision}
    abstractor = toy["abstractor_config"] if toy_vision else {**toy["abstractor_config"], **size.abstractor}
    config = Owl2Config(vision_config=vision, abstractor_config=abstractor, text_config=dict(size.text))
    config._attn_implementation = "sdpa"
    config.text_config._attn_implementation = "sdpa"
    return config


def build_pair(ctx: Context) -> tuple[Owl2Model, LlamaForCausalLM]:
    """`LlamaForCausalLM` and `Owl2Model` computing the same function (weights copied with `llama_to_owl2`)."""
    torch.manual_seed(0)
    text = LlamaConfig(**ctx.size.text)
    text._attn_implementation = "sdpa"
    llama = LlamaForCausalLM(text)
    owl = Owl2Model(owl2_config(ctx.size))
    missing, unexpected = owl.load_state_dict(llama_to_owl2(llama.state_dict()), strict=False)
    stray = [k for k in missing if not k.startswith(("vision_model.", "abstractor."))]
    if stray or unexpected:
        raise RuntimeError(f"llama_to_owl2 left decoder keys unmatched: missing {stray}, unexpected {unexpected}")
    return owl.to(ctx.device, ctx.dtype), llama.to(ctx.device, ctx.dtype)


def train_step(model: torch.nn.Module, **inputs) -> Callable[[], None]:
    """One forward + backward of a causal LM's loss, gradients dropped first."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    return step


def mixed_modality_ids(size: Size, device: torch.device) -> torch.Tensor:
    """`(B, T)` modality ids: `text_prefix` text tokens, `image_tokens` image tokens, then text."""
    ids = torch.full((size.batch, size.seq), TEXT, dtype=torch.long, device=device)
    ids[:, size.text_prefix : size.text_prefix + size.image_tokens] = IMAGE
    return ids


# -- sections ------------------------------------------------------------------------------------------


def bench_overhead(ctx: Context) -> dict:
    """Section 1: the cost of modality adaptation, text-only and with image tokens."""
    size = ctx.size
    owl, llama = build_pair(ctx)
    owl.train(), llama.train()
    ids = torch.randint(3, size.text["vocab_size"], (size.batch, size.seq), device=ctx.device)
    timings = time_alternating(
        {"owl2": train_step(owl, input_ids=ids, labels=ids), "llama": train_step(llama, input_ids=ids, labels=ids)},
        size.repeats, size.warmup, ctx.device,
    )  # fmt: skip
    text_only = {name: t.median for name, t in timings.items()} | ratio(timings, "owl2", "llama")

    decoder = owl.language_model
    embeds = torch.randn(size.batch, size.seq, size.text["hidden_size"], device=ctx.device, dtype=ctx.dtype)
    modality_ids = mixed_modality_ids(size, ctx.device)

    def decoder_step(mixed: bool) -> Callable[[], None]:
        def step() -> None:
            decoder.zero_grad(set_to_none=True)
            routing = ModalityRouting.from_ids(modality_ids) if mixed else None  # built per forward, as Owl2Model does
            out = decoder(inputs_embeds=embeds, modality_routing=routing).last_hidden_state
            out.float().pow(2).mean().backward()

        return step

    timings = time_alternating(
        {"mixed": decoder_step(True), "text": decoder_step(False)}, size.repeats, size.warmup, ctx.device
    )
    mixed = {name: t.median for name, t in timings.items()} | ratio(timings, "mixed", "text")
    layout = f"B={size.batch} T={size.seq}: {size.text_prefix} text, {size.image_tokens} image, rest text"
    ctx.rows += [
        Row("overhead", "train step s, text only (owl2 vs LlamaForCausalLM)", text_only["owl2"], text_only["llama"],
            text_only["ratio_of_medians"], "<= 1.05", f"B={size.batch} T={size.seq}"),
        Row("overhead", "decoder fwd+bwd s, mixed vs text routing", mixed["mixed"], mixed["text"],
            mixed["ratio_of_medians"], "<= 1.05", layout),
    ]  # fmt: skip
    return {"text_only_train_step": text_only, "mixed_decoder_step": mixed, "mixed_layout": layout}


def bench_generation(ctx: Context) -> dict:
    """Section 2: greedy decoding tokens/s with the KV cache, owl2 vs `LlamaForCausalLM.generate`."""
    size = ctx.size
    owl, llama = build_pair(ctx)
    owl.eval(), llama.eval()
    new = size.gen_new_tokens
    options = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0, use_cache=True)
    result = {}
    for batch in size.gen_batches:
        prompt = torch.randint(3, size.text["vocab_size"], (batch, size.gen_prompt), device=ctx.device)
        mask = torch.ones_like(prompt)
        outputs = {}

        def generate(model: torch.nn.Module, name: str) -> Callable[[], None]:
            def run() -> None:
                outputs[name] = model.generate(input_ids=prompt, attention_mask=mask, **options)

            return run

        timings = time_alternating(
            {"owl2": generate(owl, "owl2"), "llama": generate(llama, "llama")}, size.repeats, size.warmup, ctx.device
        )
        tokens = batch * new
        # tokens/s ratio = time ratio inverted: llama seconds over owl2 seconds
        figures = ratio(timings, "llama", "owl2")
        result[f"batch_{batch}"] = {
            "owl2_tokens_per_s": tokens / timings["owl2"].median,
            "llama_tokens_per_s": tokens / timings["llama"].median,
            "ratio_of_medians": figures["ratio_of_medians"],
            "median_paired_ratio": figures["median_paired_ratio"],
            "same_tokens": bool(torch.equal(outputs["owl2"][:, -new:], outputs["llama"][:, -new:])),
        }
        r = result[f"batch_{batch}"]
        ctx.rows.append(
            Row("generation", f"tokens/s, batch {batch}", r["owl2_tokens_per_s"], r["llama_tokens_per_s"],
                r["ratio_of_medians"], ">= 0.95", f"prompt {size.gen_prompt}, {new} new, greedy")
        )  # fmt: skip
    return result


def end_to_end_setup(ctx: Context) -> tuple[Owl2Config, Owl2Model, torch.Tensor, torch.Tensor]:
    """The end-to-end model (ViT + abstractor + decoder at the mode's dims, seeded, train mode) and its batch:
    `(B, e2e_text_tokens)` ids with one image right after the first token, and `(B, 3, S, S)` pixels."""
    size = ctx.size
    config = owl2_config(size, toy_vision=False)
    torch.manual_seed(0)
    model = Owl2Model(config).to(ctx.device, ctx.dtype).train()
    image = config.vision_config.image_size
    ids = torch.randint(3, size.text["vocab_size"], (size.batch, size.e2e_text_tokens), device=ctx.device)
    ids[:, 1] = config.image_token_index
    pixels = torch.randn(size.batch, 3, image, image, device=ctx.device, dtype=ctx.dtype)
    return config, model, ids, pixels


def bench_end_to_end(ctx: Context) -> dict:
    """Section 3: a full training step (ViT + abstractor + decoder, AdamW) on batches with one image each."""
    size = ctx.size
    config, model, ids, pixels = end_to_end_setup(ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    image = config.vision_config.image_size
    labels = ids.clone()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=labels, pixel_values=pixels).loss.backward()
        optimizer.step()

    step()  # allocate optimizer state before the peak is reset
    reset_peak_memory(ctx.device)
    timing = time_alternating({"step": step}, size.repeats, size.warmup, ctx.device)["step"]
    tokens = size.batch * (size.e2e_text_tokens - 1 + config.num_image_tokens)
    result = {
        "step_s": timing.median,
        "samples_per_s": size.batch / timing.median,
        "tokens_per_s": tokens / timing.median,
        "peak_memory_bytes": peak_memory_bytes(ctx.device),
        "peak_memory_kind": "max_memory_allocated" if ctx.device.type == "cuda" else "process peak RSS (VmHWM)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "layout": f"B={size.batch}, {image} px image -> {config.num_image_tokens} tokens + {size.e2e_text_tokens - 1} text",
    }
    note = result["layout"]
    ctx.rows += [
        Row("end_to_end", "samples/s", result["samples_per_s"], note=note),
        Row("end_to_end", "tokens/s (LLM tokens)", result["tokens_per_s"]),
        Row("end_to_end", f"peak memory MiB ({result['peak_memory_kind']})", result["peak_memory_bytes"] / 2**20),
    ]
    return result


def bench_abstractor(ctx: Context, text_tokens: int = 64) -> dict:
    """Section 4: what the abstractor saves per image on the 7B preset (analytic), checked on the toy."""
    preset = Owl2Config.from_json_file(REPO / "configs" / "model" / "owl2-llama2-7b.json")
    text, grid = preset.text_config, preset.vision_config.grid_size
    with_abstractor, without = preset.num_image_tokens, grid * grid + 1  # 65, 1025 at 448 px

    def prompt_flops(image_tokens: int) -> int:  # prefill of one image + text, logits for the last position only
        return prefill_flops(text, image_tokens + text_tokens, lm_head_tokens=1)

    cost = abstractor_flops(preset.abstractor_config, without, text.hidden_size)
    result = {
        "llm_tokens_per_image": {"abstractor": with_abstractor, "patch_tokens": without},
        "prefill_flops": {"abstractor": prompt_flops(with_abstractor), "patch_tokens": prompt_flops(without)},
        "abstractor_flops_per_image": cost,
        "text_tokens_in_prompt": text_tokens,
    }
    flops = result["prefill_flops"]
    result["prefill_flops_saved_per_image"] = flops["patch_tokens"] - flops["abstractor"] - cost
    result["prefill_speedup_bound"] = flops["patch_tokens"] / (flops["abstractor"] + cost)

    # the formula against FlopCounterMode on the toy decoder (no LM head: the decoder alone)
    toy = Owl2Config.from_json_file(REPO / "configs" / "model" / "owl2-toy.json")
    torch.manual_seed(0)
    decoder = Owl2Model(toy).language_model.eval()
    embeds = torch.randn(1, 24, toy.text_config.hidden_size)
    routing_ids = torch.zeros(1, 24, dtype=torch.long)
    routing_ids[:, 2:11] = IMAGE
    with torch.no_grad():
        counted = counted_flops(lambda: decoder(inputs_embeds=embeds, modality_routing=ModalityRouting.from_ids(routing_ids)))
    result["toy_check"] = {"formula": prefill_flops(toy.text_config, 24, lm_head_tokens=0), "counted": counted}

    ctx.rows += [
        Row("abstractor", "LLM tokens per 448 px image", with_abstractor, without, with_abstractor / without,
            note="7B preset: abstractor vs ViT patch tokens"),
        Row("abstractor", f"prefill GFLOPs, 1 image + {text_tokens} text", flops["abstractor"] / 1e9,
            flops["patch_tokens"] / 1e9, flops["abstractor"] / flops["patch_tokens"], note="analytic, dense attention"),
        Row("abstractor", "abstractor GFLOPs per image", cost / 1e9, note="paid only on the abstractor path"),
        Row("abstractor", "toy decoder FLOPs: formula vs FlopCounterMode", result["toy_check"]["formula"],
            counted, result["toy_check"]["formula"] / counted),
    ]  # fmt: skip
    return result


def release_upm_forward(upm: UniversalProjection, features: torch.Tensor, modality: str) -> torch.Tensor:
    """The release's UPM loop on owl2's modules: the router over all Q + L tokens (keeping Q), then each expert
    over the whole sequence in turn, sliced and mixed (official `onellm.py`, `encode_image`)."""
    queries = upm.config.num_modality_tokens
    tokens = upm.modality_tokens[modality].expand(features.shape[0], -1, -1)
    hidden = torch.cat([tokens, upm.in_proj[modality](features)], dim=1)  # (N, Q + L, H)
    gates = upm.routers[modality](hidden).sigmoid()  # (N, Q + L, K)
    weights = (gates / gates.sum(dim=-1, keepdim=True))[:, :queries]  # (N, Q, K)
    mixed = 0
    for k, expert in enumerate(upm.experts):
        mixed = mixed + expert(hidden)[:, :queries] * weights[..., k : k + 1]
    return upm.out_proj[modality](mixed)  # (N, Q, D_llm)


class ReleaseLoopProjection(UniversalProjection):
    """The UPM computing the release's loop (`release_upm_forward`), to put in a whole OneLLM model."""

    forward = release_upm_forward


def onellm_pair(ctx: Context) -> tuple[torch.nn.Module, torch.nn.Module]:
    """An image-only `OneLLMModel` at the section's dims (CLIP from `size.vision` at patch 14, the UPM from
    `size.upm`, LLaMA from `size.text`) and a copy whose UPM runs the release's loop, same weights, eval mode."""
    from owl2.config import OneLLMConfig
    from owl2.models.onellm import OneLLMModel

    size = ctx.size
    toy = json.loads((REPO / "configs" / "model" / "onellm-toy.json").read_text())
    toy.pop("model_type")
    config = OneLLMConfig(**{**toy, "modalities": ["image"], "modality_token_index": {"image": toy["modality_token_index"]["image"]},
                             "vision_config": {**toy["vision_config"], **size.vision, "patch_size": 14},
                             "projection_config": {**toy["projection_config"], **size.upm}, "text_config": dict(size.text)})  # fmt: skip
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = OneLLMModel(config).to(ctx.device, ctx.dtype).eval()
    release = copy.deepcopy(model)
    loop = ReleaseLoopProjection(config.projection_config, ["image"], model.projection.input_size, model.projection.output_size)
    loop.load_state_dict(model.projection.state_dict())
    release.projection = loop.to(ctx.device, ctx.dtype).eval()
    return model, release


def bench_onellm_with_upm(ctx: Context) -> dict:
    """The whole OneLLM forward (one image + text per sample) and greedy generation, owl2's UPM vs the loop."""
    size = ctx.size
    owl, release = onellm_pair(ctx)
    config = owl.config
    ids = torch.randint(3, size.text["vocab_size"], (size.batch, size.e2e_text_tokens), device=ctx.device)
    ids[:, 1] = config.modality_token_index["image"]
    image = config.vision_config.image_size
    pixels = torch.randn(size.batch, 3, image, image, device=ctx.device, dtype=ctx.dtype)
    with torch.no_grad():
        error = (owl(input_ids=ids, modality_inputs={"image": pixels}).logits
                 - release(input_ids=ids, modality_inputs={"image": pixels}).logits).abs().max().item()  # fmt: skip
        forward = time_alternating({name: (lambda m=m: m(input_ids=ids, modality_inputs={"image": pixels}))
                                    for name, m in (("owl2", owl), ("release", release))}, size.repeats, size.warmup, ctx.device)  # fmt: skip
    new = size.gen_new_tokens
    options = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    prompt, one = ids[:1], {"image": pixels[:1]}
    outputs = {}

    def generate(name: str, model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            outputs[name] = model.generate(input_ids=prompt, modality_inputs=one, **options)

        return run

    gen = time_alternating({"owl2": generate("owl2", owl), "release": generate("release", release)},
                           size.repeats, size.warmup, ctx.device)  # fmt: skip
    return {
        "forward": {name: t.median for name, t in forward.items()} | {"speedup": ratio(forward, "release", "owl2")},
        "generation": {f"{name}_tokens_per_s": new / t.median for name, t in gen.items()}
        | {"speedup": ratio(gen, "release", "owl2"), "same_tokens": bool(torch.equal(outputs["owl2"], outputs["release"]))},
        "max_abs_logit_difference": error,
        "layout": f"B={size.batch}, {image} px image -> {config.num_tokens_per_input} tokens + {size.e2e_text_tokens - 1} text",
    }


def bench_upm(ctx: Context, clip_tokens: int = 257, output_size: int = 4096) -> dict:
    """Section 6: the UPM, owl2's batched experts against the release's loop (same modules, same weights)."""
    size = ctx.size
    config = OneLLMProjectionConfig(**size.upm)
    torch.manual_seed(0)
    width = config.hidden_size
    upm = UniversalProjection(config, ["image"], width, min(output_size, 4 * width)).to(ctx.device, ctx.dtype)
    features = torch.randn(size.upm_batch, clip_tokens, width, device=ctx.device, dtype=ctx.dtype)

    upm.eval()
    with torch.no_grad():
        upm.precompute_router()
        error = (upm(features, "image") - release_upm_forward(upm, features, "image")).abs().max().item()
        infer = time_alternating({
            "owl2": lambda: upm(features, "image"),
            "release": lambda: release_upm_forward(upm, features, "image"),
        }, size.repeats, size.warmup, ctx.device)  # fmt: skip

    upm.train()

    def step(forward) -> Callable[[], None]:
        def run() -> None:
            upm.zero_grad(set_to_none=True)
            forward(upm, features, "image").float().square().mean().backward()

        return run

    train = time_alternating({"owl2": step(UniversalProjection.__call__), "release": step(release_upm_forward)},
                             size.repeats, size.warmup, ctx.device)  # fmt: skip
    result = {
        "inference": {name: t.median for name, t in infer.items()} | {"speedup": ratio(infer, "release", "owl2")},
        "training_step": {name: t.median for name, t in train.items()} | {"speedup": ratio(train, "release", "owl2")},
        "max_abs_difference": error,
        "dims": {**size.upm, "batch": size.upm_batch, "clip_tokens": clip_tokens},
    }
    dims = f"K={config.num_experts}, {config.num_hidden_layers} layers, H={width}, {size.upm_batch} x {clip_tokens} tokens"
    ctx.rows += [
        Row("upm", "inference forward, s", infer["owl2"].median, infer["release"].median,
            result["inference"]["speedup"]["ratio_of_medians"], ">= 2", dims),
        Row("upm", "training fwd+bwd, s", train["owl2"].median, train["release"].median,
            result["training_step"]["speedup"]["ratio_of_medians"], "", f"outputs agree within {error:.1e}"),
    ]  # fmt: skip
    whole = result["onellm"] = bench_onellm_with_upm(ctx)
    ctx.rows += [
        Row("upm", "whole OneLLM forward, s", whole["forward"]["owl2"], whole["forward"]["release"],
            whole["forward"]["speedup"]["ratio_of_medians"], "", whole["layout"]),
        Row("upm", "OneLLM greedy tokens/s, batch 1", whole["generation"]["owl2_tokens_per_s"],
            whole["generation"]["release_tokens_per_s"], whole["generation"]["speedup"]["ratio_of_medians"], "",
            f"{size.gen_new_tokens} new; same tokens: {whole['generation']['same_tokens']}"),
    ]  # fmt: skip
    return result


def synthetic_mix_lengths(count: int, num_image_tokens: int = 65) -> list[int]:
    """Token lengths of the built-in synthetic instruction mix (stage 2), each image counted as its tokens."""
    from owl2.data.dataset import SupervisedDataset
    from owl2.data.synthetic import write_synthetic_dataset
    from owl2.processing.image import Owl2ImageProcessor
    from owl2.processing.processor import Owl2Processor
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic_dataset(tmp, num_stage1=0, num_stage2=count, num_heldout=0)
        processor = Owl2Processor(AutoTokenizer.from_pretrained(paths["tokenizer"]), Owl2ImageProcessor(56))
        dataset = SupervisedDataset(paths["stage2"], processor, paths["images"], tokens_per_input=num_image_tokens)
        lengths = []
        for i in range(len(dataset)):
            sample = dataset[i]
            if sample is not None:
                images = len(sample["inputs"].get("image", ()))
                lengths.append(len(sample["input_ids"]) + images * (num_image_tokens - 1))
    return lengths


def padded_batches(lengths: list[int], batch: int, vocab: int, device: torch.device) -> list[dict]:
    """Samples in the given order, `batch` at a time, right-padded to the longest of each batch."""
    out = []
    for j in range(0, len(lengths), batch):
        chunk = lengths[j : j + batch]
        ids = torch.randint(3, vocab, (len(chunk), max(chunk)), device=device)
        mask = (torch.arange(max(chunk), device=device) < torch.tensor(chunk, device=device)[:, None]).long()
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE_INDEX)})
    return out


def packed_batches(lengths: list[int], capacity: int, rows: int, vocab: int, device: torch.device) -> list[dict]:
    """The same samples packed first-fit decreasing (`owl2.data.packing.pack`) into rows of `capacity`
    tokens, `rows` rows per batch; the attention mask numbers the samples of a row (0 = end padding)."""
    from owl2.data.packing import pack

    packed = pack(lengths, capacity)
    out = []
    for j in range(0, len(packed), rows):
        chunk = packed[j : j + rows]
        width = max(sum(lengths[i] for i in row) for row in chunk)
        ids = torch.randint(3, vocab, (len(chunk), width), device=device)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(chunk):
            offset = 0
            for number, i in enumerate(row, start=1):
                mask[r, offset : offset + lengths[i]] = number
                offset += lengths[i]
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE_INDEX)})
    return out


def bench_packing(ctx: Context) -> dict:
    """Section 5: packed vs padded training throughput (text-only decoder steps) on two length distributions.

    Padded: the samples in random order, `size.packing_batch` per batch, right-padded to the longest
    (no length grouping). Packed: the same samples packed into rows of `size.seq` tokens, enough rows
    per batch to hold about as many real tokens as a padded batch. Both contenders are one pass over
    all samples (same real tokens), timed alternating; the figure is real tokens/s packed over padded.
    Image tokens count in the lengths but run as text: packing changes the decoder's work, while the
    ViT and abstractor cost per image is the same either way. `padding_bound` (padded tokens / real
    tokens) is what removing padding can at most gain where cost is linear in tokens.
    """
    size = ctx.size
    owl, _ = build_pair(ctx)
    owl.train()
    vocab, n = size.text["vocab_size"], size.packing_samples
    distributions = {
        "synthetic_mix": synthetic_mix_lengths(n, size.image_tokens),
        "llava665k_like": lognormal_lengths(n, median=300 * size.seq / 512, high=size.seq, seed=0),
    }
    result: dict = {}
    generator = torch.Generator().manual_seed(0)
    for name, lengths in distributions.items():
        lengths = [min(length, size.seq) for length in lengths]
        lengths = [lengths[i] for i in torch.randperm(len(lengths), generator=generator).tolist()]
        real = sum(lengths)
        rows = max(1, round(size.packing_batch * real / len(lengths) / size.seq))
        contenders = {
            "packed": packed_batches(lengths, size.seq, rows, vocab, ctx.device),
            "padded": padded_batches(lengths, size.packing_batch, vocab, ctx.device),
        }
        steps = {key: [train_step(owl, **batch) for batch in batches] for key, batches in contenders.items()}
        for key in steps:
            steps[key][0]()  # warm-up: one step each, not a whole pass

        def one_pass(key: str) -> Callable[[], None]:
            return lambda: [step() for step in steps[key]]

        timings = time_alternating({key: one_pass(key) for key in steps}, size.packing_repeats, 0, ctx.device)
        figures = ratio(timings, "padded", "packed")  # seconds padded / seconds packed = tokens/s packed / padded
        slots = {key: sum(b["input_ids"].numel() for b in batches) for key, batches in contenders.items()}
        result[name] = {
            "samples": len(lengths),
            "mean_length": real / len(lengths),
            "packed_real_tokens_per_s": real / timings["packed"].median,
            "padded_real_tokens_per_s": real / timings["padded"].median,
            "packed_over_padded": figures["ratio_of_medians"],
            "median_paired_ratio": figures["median_paired_ratio"],
            "padding_bound": slots["padded"] / real,
            "packed_fill": real / slots["packed"],
            "batches": {key: len(batches) for key, batches in contenders.items()},
        }
        r = result[name]
        ctx.rows.append(
            Row("packing", f"real tokens/s packed vs padded, {name}", r["packed_real_tokens_per_s"],
                r["padded_real_tokens_per_s"], r["packed_over_padded"], ">= 1.3",
                f"{len(lengths)} samples, mean {r['mean_length']:.0f}; padded B={size.packing_batch} random order "
                f"(padded/real {r['padding_bound']:.2f}); packed {rows}x{size.seq} (fill {r['packed_fill']:.2f})")
        )  # fmt: skip
    return result


# -- driver --------------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def bench_compile(ctx: Context) -> dict:
    """Section 7: `owl2.compile`, compiled against eager: the end-to-end training step (`compile_blocks`) and
    greedy decoding (`compile_for_generation`: compiled blocks for the prompt, a static cache and a compiled step),
    compile time apart from the steady state.

    Compile time is the first compiled call minus an eager call of the same work; the steady state is the
    alternating medians after that first call.
    """
    size = ctx.size
    config, eager, ids, pixels = end_to_end_setup(ctx)
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled, backend=ctx.compile_backend)
    vocab, image = size.text["vocab_size"], config.vision_config.image_size
    steps = {name: train_step(model, input_ids=ids, labels=ids.clamp(min=0), pixel_values=pixels)
             for name, model in (("compiled", compiled), ("eager", eager))}  # fmt: skip
    first = {name: _timed(step, ctx.device) for name, step in steps.items()}
    timings = time_alternating(steps, size.repeats, size.warmup, ctx.device)
    train = {"compile_s": first["compiled"] - timings["eager"].median, "compiled_s": timings["compiled"].median,
             "eager_s": timings["eager"].median} | ratio(timings, "eager", "compiled")  # fmt: skip

    owl, _ = build_pair(ctx)
    owl.eval()
    compiled_owl = copy.deepcopy(owl)
    compiled_kwargs = compile_for_generation(compiled_owl, ctx.compile_backend)
    new = size.gen_new_tokens
    options = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    generation = {}
    for batch in size.gen_batches:
        prompt = torch.randint(3, vocab, (batch, size.gen_prompt), device=ctx.device)
        calls = {
            "compiled": lambda: compiled_owl.generate(input_ids=prompt, **options, **compiled_kwargs),
            "eager": lambda: owl.generate(input_ids=prompt, **options),
        }
        first = {name: _timed(call, ctx.device) for name, call in calls.items()}
        timings = time_alternating(calls, size.repeats, size.warmup, ctx.device)
        generation[f"batch_{batch}"] = {
            "compile_s": first["compiled"] - timings["eager"].median,
            "compiled_tokens_per_s": batch * new / timings["compiled"].median,
            "eager_tokens_per_s": batch * new / timings["eager"].median,
        } | ratio(timings, "eager", "compiled")
    layout = f"B={size.batch}, {image} px image + {size.e2e_text_tokens - 1} text"
    ctx.rows.append(Row("compile", "train step s, compiled vs eager", train["compiled_s"], train["eager_s"],
                        train["ratio_of_medians"], ">= 1.5 (issue 22)", f"{layout}; compile {train['compile_s']:.0f} s"))
    for batch in size.gen_batches:
        g = generation[f"batch_{batch}"]
        ctx.rows.append(Row("compile", f"decode tokens/s, batch {batch}, static+compiled vs dynamic eager",
                            g["compiled_tokens_per_s"], g["eager_tokens_per_s"], g["ratio_of_medians"], ">= 1.5",
                            f"prompt {size.gen_prompt}, {new} new; compile {g['compile_s']:.0f} s"))  # fmt: skip
    return {"train_step": train, "generation": generation, "layout": layout}


def _top_operators(prof, count: int) -> list[dict]:
    """The `count` operators with the most self time (device time on a GPU), as JSON rows."""
    cuda = any(getattr(e, "self_device_time_total", 0) for e in prof.key_averages())
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1.0
    return [{"operator": e.key, "self_ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total,
             "calls": e.count} for e in events[:count]]  # fmt: skip


def bench_profile(ctx: Context, top: int = 12, steps: int = 3) -> dict:
    """Section 8: where the time goes, by operator: the end-to-end training step (section 3's work, eager,
    without the optimizer) and one decoding step of greedy generation (section 2's decoder, batch 1)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    size = ctx.size
    _, model, ids, pixels = end_to_end_setup(ctx)
    step = train_step(model, input_ids=ids, labels=ids.clone(), pixel_values=pixels)
    vocab = size.text["vocab_size"]

    owl, _ = build_pair(ctx)
    owl.eval()
    prompt = torch.randint(3, vocab, (1, size.gen_prompt), device=ctx.device)
    with torch.no_grad():
        prefill = owl(input_ids=prompt, use_cache=True)
    cache, token = prefill.cache, prefill.logits[:, -1:].argmax(-1)
    mask = torch.ones(1, size.gen_prompt + 1, dtype=torch.long, device=ctx.device)
    length = cache.get_seq_length()

    def decode() -> None:
        with torch.no_grad():
            owl(input_ids=token, attention_mask=mask, cache=cache, use_cache=True)
        cache.crop(-(cache.get_seq_length() - length))  # drop the new token: the same step again, same cache

    result = {}
    for name, fn in (("train_step", step), ("decode_step", decode)):
        fn()  # warm-up, unrecorded
        synchronize(ctx.device)
        wall = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(steps):
                fn()
            synchronize(ctx.device)
        wall = (time.perf_counter() - wall) / steps
        ops = _top_operators(prof, top)
        result[name] = {"top_operators": ops, "steps": steps, "wall_s_per_step_profiled": wall}
        ctx.rows.append(Row("profile", f"{name}: wall ms/step (profiled)", wall * 1e3))
        for op in ops[:6]:
            ctx.rows.append(Row("profile", f"{name}: {op['operator']}, self ms/step", op["self_ms"] / steps,
                                note=f"{op['share']:.0%} of self time, {op['calls'] // steps} calls/step"))  # fmt: skip
    return result


@dataclass
class Official:
    """Where the official mPLUG-Owl2 code is: the folder holding `mplug_owl2` and a Python whose environment runs it."""

    repo: Path
    python: Path
    rounds: int = 3
    calls: int = 3
    """Timed calls per worker process (its median is the round's figure)."""
    works: tuple[str, ...] = ("train", "fwd_bwd", "generate")


def bench_official(ctx: Context, official: Official) -> dict:
    """Section 9: owl2 (eager and compiled) against the official code itself, on the same checkpoint.

    An `Owl2Model` at the end-to-end dims is saved and exported to the official layout
    (`owl2.checkpoint.convert.export_official`). Each contender runs in a process of its own
    (`tools/bench_worker.py`; the official one with `official.python` and the official folder on its path), one
    process per contender and round, the order flipped every round; a process's figure is the median of its
    timed calls after a warm-up call (compile time is in the warm-up), a contender's the median over rounds.
    """
    import subprocess

    from owl2.checkpoint.convert import export_official

    size = ctx.size
    if ctx.device.type != "cpu":
        raise ValueError("the official comparison runs on the CPU (the workers take no device)")
    config = owl2_config(size, toy_vision=False)
    torch.manual_seed(0)
    worker = REPO / "tools" / "bench_worker.py"
    with tempfile.TemporaryDirectory() as tmp:
        owl_dir, official_dir = Path(tmp) / "owl2", Path(tmp) / "official"
        Owl2Model(config).save_pretrained(owl_dir)
        export_official(owl_dir, official_dir, progress=False)
        contenders = {
            "official": [str(official.python), str(worker), "--impl", "official", "--official-repo", str(official.repo),
                         "--model", str(official_dir)],
            "owl2": [sys.executable, str(worker), "--impl", "owl2", "--model", str(owl_dir)],
            "owl2_compiled": [sys.executable, str(worker), "--impl", "owl2", "--model", str(owl_dir),
                              "--compile-backend", ctx.compile_backend],
        }  # fmt: skip
        shape = ["--batch", str(size.batch), "--text", str(size.e2e_text_tokens), "--new-tokens", str(size.gen_new_tokens),
                 "--calls", str(official.calls)]  # fmt: skip
        result: dict = {"rounds": official.rounds, "calls_per_process": official.calls}
        for work in official.works:
            runs: dict[str, list[dict]] = {name: [] for name in contenders}
            for r in range(official.rounds):
                order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
                for name in order:
                    done = subprocess.run([*contenders[name], "--work", work, *shape], capture_output=True, text=True)
                    if done.returncode != 0:
                        raise RuntimeError(f"bench_worker {name} {work} failed ({done.returncode}):\n{done.stderr[-3000:]}")
                    runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            medians = {name: statistics.median(run["median_s"] for run in rs) for name, rs in runs.items()}
            result[work] = {
                "median_s": medians,
                "first_call_s": {name: statistics.median(run["first_call_s"] for run in rs) for name, rs in runs.items()},
                "official_over_owl2": medians["official"] / medians["owl2"],
                "official_over_owl2_compiled": medians["official"] / medians["owl2_compiled"],
                "torch": {name: rs[0]["torch"] for name, rs in runs.items()},
            }
            if work == "generate":
                result[work]["same_tokens"] = {name: rs[0]["tokens"] == runs["official"][0]["tokens"] for name, rs in runs.items()}
    layout = f"B={size.batch} x ({config.vision_config.image_size} px image + {size.e2e_text_tokens - 1} text)"
    labels = (("train", f"train step s, {layout}, AdamW"), ("fwd_bwd", "forward + backward s, same batch"),
              ("generate", f"greedy {size.gen_new_tokens} tokens s, batch 1"))
    for work, label in labels:
        if work not in result:
            continue
        w = result[work]
        for name in ("owl2", "owl2_compiled"):
            ctx.rows.append(Row("official", f"{label}: {name} vs official", w["median_s"][name], w["median_s"]["official"],
                                w["median_s"]["official"] / w["median_s"][name], ">= 1.5 (issue 22)",
                                f"{official.rounds} rounds x {official.calls} calls, separate processes"))  # fmt: skip
    return result


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(rows: list[Row]) -> str:
    def fmt(x: float | None) -> str:
        if x is None:
            return "-"
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"

    header = ("section", "metric", "owl2", "reference", "ratio", "goal", "note")
    lines = [[r.section, r.metric, fmt(r.owl2), fmt(r.reference), fmt(r.ratio), r.goal, r.note] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def run(size: Size, device: torch.device, sections: tuple[str, ...] = SECTIONS, threads: int | None = None,
        compile_backend: str = "inductor", official: Official | None = None) -> dict:  # fmt: skip
    """Run `sections` at `size` on `device`; returns the JSON-able results (the table rows included)."""
    if threads is not None:
        torch.set_num_threads(threads)
    ctx = Context(size, device, getattr(torch, size.dtype), compile_backend=compile_backend)
    benches = {
        "overhead": bench_overhead, "generation": bench_generation, "end_to_end": bench_end_to_end,
        "abstractor": bench_abstractor, "packing": bench_packing, "upm": bench_upm, "compile": bench_compile,
        "profile": bench_profile,
    }  # fmt: skip
    results: dict = {
        "machine": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "size": asdict(size),
    }
    if official is not None:
        benches["official"] = lambda ctx: bench_official(ctx, official)
    for name in sections:
        results[name] = benches[name](ctx)
    results["rows"] = [asdict(r) for r in ctx.rows]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU dims for a 2-core machine (about 3 minutes)")
    mode.add_argument("--tiny", action="store_true", help="toy dims, seconds; for tests (numbers mean nothing)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 and the 'gpu' dims unless --quick/--tiny)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch.set_num_threads on CPU (default 1: on a shared 2-core machine two OpenMP threads stall on each other)",
    )  # fmt: skip
    parser.add_argument("--sections", nargs="+", choices=(*SECTIONS, "official"), default=list(SECTIONS),
                        help="default: all but official, which needs --official and --official-python")
    parser.add_argument("--repeats", type=int, help="override the mode's rounds per comparison")
    parser.add_argument(
        "--compile-backend", default="inductor",
        help="torch.compile backend of the compile section (aot_eager: tracing only, no code generation)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--official", type=Path, metavar="DIR",
        help="the official code's mPLUG-Owl2 folder (the one holding mplug_owl2/): adds the section against it",
    )  # fmt: skip
    parser.add_argument("--official-python", type=Path, help="a Python whose environment runs the official code")
    parser.add_argument("--official-rounds", type=int, default=3, help="worker processes per contender and work")
    parser.add_argument("--official-works", nargs="+", choices=Official.works, default=list(Official.works))
    args = parser.parse_args(argv)
    official = None
    if args.official or args.official_python:
        if not (args.official and args.official_python):
            parser.error("--official and --official-python go together")
        if not (args.official / "mplug_owl2").is_dir():
            parser.error(f"{args.official} holds no mplug_owl2/ package (give the official repo's mPLUG-Owl2 folder)")
        official = Official(args.official.resolve(), args.official_python, rounds=args.official_rounds,
                            works=tuple(args.official_works))
    if ("official" in args.sections) != (official is not None):
        parser.error("the official section and --official/--official-python go together")

    device = torch.device(args.device)
    if args.tiny:
        size = SIZES["tiny"]
    elif args.quick or device.type != "cuda":
        size = SIZES["quick"]
    else:
        size = SIZES["gpu"]
    if args.repeats:
        size = replace(size, repeats=args.repeats)
    results = run(size, device, tuple(args.sections), args.threads if device.type == "cpu" else None,
                  args.compile_backend, official)  # fmt: skip
    machine = results["machine"]
    print(f"owl2 bench: {size.name} dims on {device} ({machine['device']}, {machine.get('cpu_count')} CPUs, "
          f"{machine['threads']} torch threads, {size.dtype})")  # fmt: skip
    print(format_table([Row(**r) for r in results["rows"]]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
