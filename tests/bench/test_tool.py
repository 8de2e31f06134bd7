"""`tools/bench.py` end to end on toy dimensions (`--tiny`): every section runs and the JSON is complete.

Only structure and signs are checked: timings on a shared CPU mean nothing here, and thresholds stay
out of the tests.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest
import torch

from tests.conftest import REPO


def load_tool():
    spec = importlib.util.spec_from_file_location("owl2_bench_tool", REPO / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    threads = torch.get_num_threads()
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    try:
        # aot_eager: the compile section's tracing without a minute of C++ code generation
        assert load_tool().main(["--tiny", "--compile-backend", "aot_eager", "--json", str(path)]) == 0
    finally:
        torch.set_num_threads(threads)  # the tool sets its own; leave the rest of the session as it was
    return json.loads(path.read_text())


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_every_section_and_the_machine_are_recorded(results):
    sections = {"overhead", "generation", "end_to_end", "abstractor", "packing", "upm", "compile", "profile"}
    assert {"machine", "size", "rows", *sections} <= set(results)
    assert results["machine"]["threads"] == 1 and results["size"]["name"] == "tiny"
    assert {row["section"] for row in results["rows"]} == sections


def test_overhead_ratios(results):
    for key in ("text_only_train_step", "mixed_decoder_step"):
        figures = results["overhead"][key]
        assert positive(figures["ratio_of_medians"]) and positive(figures["median_paired_ratio"])
    assert positive(results["overhead"]["text_only_train_step"]["owl2"])
    assert positive(results["overhead"]["mixed_decoder_step"]["mixed"])


def test_generation_rates_and_agreement(results):
    assert set(results["generation"]) == {"batch_1", "batch_2"}
    for figures in results["generation"].values():
        assert positive(figures["owl2_tokens_per_s"]) and positive(figures["llama_tokens_per_s"])
        assert positive(figures["ratio_of_medians"])
        assert figures["same_tokens"]  # same weights, greedy: both models must pick the same tokens


def test_end_to_end_throughput_and_memory(results):
    e2e = results["end_to_end"]
    for key in ("step_s", "samples_per_s", "tokens_per_s", "peak_memory_bytes", "parameters"):
        assert positive(e2e[key]), key


def test_abstractor_savings(results):
    ab = results["abstractor"]
    assert ab["llm_tokens_per_image"] == {"abstractor": 65, "patch_tokens": 1025}
    assert ab["prefill_flops"]["patch_tokens"] > ab["prefill_flops"]["abstractor"] > 0
    assert positive(ab["abstractor_flops_per_image"]) and positive(ab["prefill_flops_saved_per_image"])
    assert ab["toy_check"]["formula"] == ab["toy_check"]["counted"]


def test_packing_baseline(results):
    for name in ("synthetic_mix", "llava665k_like"):
        figures = results["packing"][name]
        assert positive(figures["padded_real_tokens_per_s"]) and positive(figures["packed_real_tokens_per_s"])
        assert positive(figures["packed_over_padded"]) and figures["padding_bound"] >= 1.0 and 0 < figures["packed_fill"] <= 1
        assert figures["samples"] > 0


def test_upm_against_the_release_loop(results):
    upm = results["upm"]
    for key in ("inference", "training_step"):
        assert positive(upm[key]["owl2"]) and positive(upm[key]["release"])
        assert positive(upm[key]["speedup"]["ratio_of_medians"])
    assert upm["max_abs_difference"] < 1e-4  # the same function: batched experts, the same weights
    assert upm["dims"]["clip_tokens"] == 257
    whole = upm["onellm"]  # the whole model, owl2's UPM against the same model with the release's loop
    assert whole["max_abs_logit_difference"] < 1e-4 and whole["generation"]["same_tokens"]
    assert positive(whole["forward"]["speedup"]["ratio_of_medians"])
    assert positive(whole["generation"]["owl2_tokens_per_s"]) and positive(whole["generation"]["release_tokens_per_s"])


def test_compile_section(results):
    section = results["compile"]
    train = section["train_step"]
    assert positive(train["compiled_s"]) and positive(train["eager_s"]) and positive(train["ratio_of_medians"])
    assert isinstance(train["compile_s"], float)  # compile time, apart from the steady state (may be ~0 here)
    for batch in (1, 2):
        g = section["generation"][f"batch_{batch}"]
        assert positive(g["compiled_tokens_per_s"]) and positive(g["eager_tokens_per_s"])
    assert sum(row["section"] == "compile" for row in results["rows"]) == 3


def test_profile_section(results):
    for name in ("train_step", "decode_step"):
        section = results["profile"][name]
        ops = section["top_operators"]
        assert positive(section["wall_s_per_step_profiled"]) and ops
        assert [op["self_ms"] for op in ops] == sorted((op["self_ms"] for op in ops), reverse=True)
        assert all(0 < op["share"] <= 1 for op in ops) and sum(op["share"] for op in ops) <= 1 + 1e-9
    assert any(op["operator"] in ("aten::mm", "aten::addmm") for op in results["profile"]["train_step"]["top_operators"])
