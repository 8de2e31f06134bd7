"""`owl2.bench`: the alternating timer, the FLOP formulas (by hand and against FlopCounterMode), memory, lengths."""

from __future__ import annotations

import torch

from owl2.bench import (
    Timing,
    abstractor_flops,
    counted_flops,
    decoder_layer_matmul_params,
    lognormal_lengths,
    peak_memory_bytes,
    prefill_flops,
    ratio,
    reset_peak_memory,
    time_alternating,
)
from owl2.models.abstractor import VisualAbstractor
from owl2.models.decoder import ModalityRouting
from tests.conftest import toy_config, toy_model


def test_time_alternating_returns_a_median_per_contender_and_alternates():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    timings = time_alternating(fns, repeats=4, warmup=2)
    assert list(timings) == ["a", "b"]
    for timing in timings.values():
        assert len(timing.samples) == 4
        assert timing.median >= 0
    # two warm-up rounds in order, then the order flips every recorded round
    assert calls == ["a", "b"] * 2 + ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_ratio_of_medians_and_paired_ratio():
    timings = {"x": Timing([2.0, 4.0, 6.0]), "y": Timing([1.0, 2.0, 2.0])}
    figures = ratio(timings, "x", "y")
    assert figures["ratio_of_medians"] == 4.0 / 2.0
    assert figures["median_paired_ratio"] == 2.0  # per-round ratios 2, 2, 3


def test_prefill_flops_matches_a_hand_count_on_the_toy():
    text = toy_config().text_config  # hidden 128, FFN 344, 4 layers, 4 heads, 2 KV heads (head dim 32), vocab 512
    per_layer = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 344  # q, o; k, v; gate, up, down
    assert decoder_layer_matmul_params(text) == per_layer == 181_248
    tokens = 10
    linear = 2 * per_layer * 4 * tokens
    attention = 4 * 4 * 128 * tokens * tokens  # 4 * layers * (heads * head_dim) * T * T
    head = 2 * 128 * 512 * tokens
    assert prefill_flops(text, tokens) == linear + attention + head == 16_015_360
    # one more token after a cache of 10: the attention term sees 11 keys, the head one position
    assert prefill_flops(text, 1, context=10) == 2 * per_layer * 4 + 4 * 4 * 128 * 11 + 2 * 128 * 512
    assert prefill_flops(text, tokens, batch=3) == 3 * prefill_flops(text, tokens)


def test_counted_flops_counts_attention_on_the_cpu():
    # torch's counter knows only the CUDA attention kernels; counted_flops lends their formula to the CPU one.
    q, k = torch.randn(2, 4, 20, 32), torch.randn(2, 4, 12, 32)
    dense = 2 * (2 * 2 * 4 * 20 * 12 * 32)  # Q K^T and softmax(.) V, each 2 * B * H * Tq * Tk * head_dim
    assert counted_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k)) == dense
    assert counted_flops(lambda: torch.softmax(q @ k.transpose(-1, -2), -1) @ k) == dense  # eager: two bmm


def test_prefill_flops_matches_flop_counter_on_the_mixed_decoder():
    model = toy_model()
    seq = 20
    embeds = torch.randn(2, seq, 128)
    modality_ids = torch.zeros(2, seq, dtype=torch.long)
    modality_ids[:, 3:12] = 1  # image tokens run through the image K/V branch: same count
    with torch.no_grad():
        counted = counted_flops(
            lambda: model.language_model(inputs_embeds=embeds, modality_routing=ModalityRouting.from_ids(modality_ids))
        )
        with_head = counted_flops(lambda: model(input_ids=torch.randint(3, 512, (2, seq))))
    assert counted == prefill_flops(model.config.text_config, seq, batch=2, lm_head_tokens=0)
    assert with_head == prefill_flops(model.config.text_config, seq, batch=2)


def test_abstractor_flops_matches_flop_counter_on_the_toy():
    config = toy_config()
    abstractor = VisualAbstractor(config.abstractor_config, config.text_config.hidden_size)
    grid = config.vision_config.grid_size
    image_tokens = torch.randn(1, grid * grid + 1, config.abstractor_config.hidden_size)
    counted = counted_flops(lambda: abstractor(image_tokens))  # with autograd on: FlopCounterMode hooks modules
    assert counted == abstractor_flops(config.abstractor_config, grid * grid + 1, config.text_config.hidden_size)


def test_peak_memory_and_lengths():
    reset_peak_memory("cpu")
    assert peak_memory_bytes("cpu") > 0
    lengths = lognormal_lengths(2000, median=300, sigma=0.6, low=32, high=2048, seed=1)
    assert len(lengths) == 2000 and min(lengths) >= 32 and max(lengths) <= 2048
    assert lengths == lognormal_lengths(2000, median=300, sigma=0.6, low=32, high=2048, seed=1)
    share = sum(100 <= n <= 600 for n in lengths) / len(lengths)
    assert 0.7 < share < 0.95  # "most between 100 and 600", as LLaVA-665k
