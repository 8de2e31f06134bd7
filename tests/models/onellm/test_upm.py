"""The universal projection module: the router's constant table, its cache, sigmoid vs softmax, errors, sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from owl2.config import OneLLMProjectionConfig
from owl2.constants import ONELLM_MODALITIES
from owl2.models.upm import UniversalProjection
from tests.models.onellm import official_reference as ref
from tests.models.onellm.conftest import TOY, projection_config, toy_encoder, toy_projection


def _features(batch: int = 2, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, length, TOY.clip_width, generator=torch.Generator().manual_seed(seed))


def test_the_kept_router_weights_depend_only_on_the_modality_tokens():
    upm = toy_projection()
    sd = ref.release_state_dict(toy_encoder().state_dict(), upm.state_dict())
    q = TOY.modality_tokens
    with torch.no_grad():
        _, routing_a = ref.project(sd, _features(2, 9, seed=1), "point", TOY, return_router=True)
        _, routing_b = ref.project(sd, _features(3, 4, seed=2), "point", TOY, return_router=True)
        table = upm.routing_weights("point")  # (1, Q, K)
    assert table.shape == (1, q, TOY.experts)
    # The release routes every token; the Q it keeps are the same for any input and any batch row.
    for routing in (routing_a, routing_b):
        assert_close(routing[:, :q], table.expand(routing.shape[0], -1, -1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(routing_a[:, q:q + 1], routing_a[:, q + 1:q + 2])  # the input tokens' weights do vary


def test_precomputed_router_gives_the_dynamic_result_and_is_used_in_eval():
    upm = toy_projection()
    features = _features()
    with torch.no_grad():
        dynamic = upm(features, "audio")
        upm.precompute_router()
        assert upm.routing_weights("audio") is upm._router_cache["audio"][1]  # the cached table is what is used
        assert_close(upm(features, "audio"), dynamic, rtol=1e-6, atol=1e-6)


def test_the_router_cache_follows_weight_changes_and_training():
    upm = toy_projection()
    upm.precompute_router()
    with torch.no_grad():
        cached = upm.routing_weights("imu").clone()
        upm.routers["imu"].fc2.bias.add_(torch.tensor([2.0, 0.0, -2.0]))  # as an optimizer step would
        moved = upm.routing_weights("imu")
    assert not torch.allclose(moved, cached)
    assert_close(moved, upm._route("imu"))
    upm.precompute_router()
    upm.load_state_dict(toy_projection(seed=5).state_dict())
    assert_close(upm.routing_weights("imu"), upm._route("imu"))
    upm.precompute_router()
    upm.train()
    assert upm._router_cache == {}
    # In training the router is computed, with its gradient.
    upm(_features(), "imu").sum().backward()
    assert upm.routers["imu"].fc1.weight.grad.abs().sum() > 0
    assert upm.modality_tokens["imu"].grad.abs().sum() > 0
    assert all(expert.layers[0].attn.q_proj.weight.grad.abs().sum() > 0 for expert in upm.experts)


def test_sigmoid_and_softmax_routers_are_the_release_and_the_paper():
    sigmoid = toy_projection(router_activation="sigmoid")
    softmax = toy_projection(router_activation="softmax")
    softmax.load_state_dict(sigmoid.state_dict())
    with torch.no_grad():
        logits = sigmoid.routers["video"](sigmoid.modality_tokens["video"])
        gates = logits.sigmoid()
        assert_close(sigmoid.routing_weights("video"), gates / gates.sum(-1, keepdim=True))
        assert_close(softmax.routing_weights("video"), logits.softmax(-1))
        for upm in (sigmoid, softmax):
            assert_close(upm.routing_weights("video").sum(-1), torch.ones(1, TOY.modality_tokens))
        assert not torch.allclose(sigmoid.routing_weights("video"), softmax.routing_weights("video"), atol=1e-3)
        assert not torch.allclose(sigmoid(_features(), "video"), softmax(_features(), "video"), atol=1e-3)


def test_the_tagged_block_is_start_tokens_end():
    upm = toy_projection()
    with torch.no_grad():
        block, tokens = upm.embed_with_tags(_features(), "fmri"), upm(_features(), "fmri")
    assert block.shape == (2, TOY.modality_tokens + 2, TOY.llm_width)
    assert torch.equal(block[:, 0], upm.start_tags["fmri"][0].expand(2, -1))
    assert torch.equal(block[:, -1], upm.end_tags["fmri"][0].expand(2, -1))
    assert torch.equal(block[:, 1:-1], tokens)


@pytest.mark.parametrize(
    ("features", "modality", "message"),
    [
        (torch.zeros(2, 9, 16), "audio", r"audio features must have shape \(N, L, 32\) .*, got \(2, 9, 16\)"),
        (torch.zeros(9, 32), "audio", r"audio features must have shape \(N, L, 32\) .*, got \(9, 32\)"),
        (torch.zeros(2, 9, 32), "text", r"built for \('image', .*\), not 'text'"),
    ],
)
def test_wrong_features_or_modality_are_refused_by_name(features, modality, message):
    with pytest.raises(ValueError, match=message):
        toy_projection()(features, modality)


def test_free_parameters_start_from_the_release_init():
    config = OneLLMProjectionConfig(num_experts=1, num_hidden_layers=1, hidden_size=256, num_attention_heads=4,
                                    intermediate_size=64, router_hidden_size=8)  # fmt: skip
    upm = UniversalProjection(config, ["image"], input_size=256, output_size=4096)
    tokens, start, end = upm.modality_tokens["image"], upm.start_tags["image"], upm.end_tags["image"]
    assert abs(tokens.std().item() - 0.02) < 0.002  # N(0, 0.02), 7,680 draws
    for tag in (start, end):  # torch.rand: U[0, 1), 4,096 draws
        assert 0.0 <= tag.min().item() and tag.max().item() < 1.0 and abs(tag.mean().item() - 0.5) < 0.03
    wq = upm.experts[0].layers[0].attn.q_proj.weight  # Xavier-uniform, the release's default_linear_init
    assert wq.abs().max().item() <= math.sqrt(6 / (256 + 256)) and wq.std().item() > 0.8 * math.sqrt(2 / 512)


def test_release_sizes_have_the_release_parameter_count():
    with torch.device("meta"):
        upm = UniversalProjection(OneLLMProjectionConfig(), ONELLM_MODALITIES, input_size=1024, output_size=4096)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    # One official TransformerBlock at dim 1024: wq, wk, wv, wo 4 x 1024^2, w1, w2, w3 3 x 1024 x 2816, two
    # RMSNorms 2 x 1024. Eight per expert: 102,776,832 (the paper says 88M per expert).
    block = 4 * 1024 * 1024 + 3 * 1024 * 2816 + 2 * 1024
    assert [count(expert) for expert in upm.experts] == [8 * block] * 3 == [102_776_832] * 3
    # Per modality: resample_tokens 30 x 1024; clip_proj1 Linear(1024, 1024) + LayerNorm; router
    # Mlp(1024, 4096, 3); clip_proj2 Linear(1024, 4096) + LayerNorm(4096); start and end tags 2 x 4096.
    per_modality = 30 * 1024 + (1024 * 1024 + 1024 + 2 * 1024) + (1024 * 4096 + 4096 + 4096 * 3 + 3) \
        + (1024 * 4096 + 4096 + 2 * 4096) + 2 * 4096  # fmt: skip
    assert per_modality == 9_507_843
    assert count(upm) == 3 * 8 * block + 8 * per_modality == 384_393_240


def _per_expert(upm: UniversalProjection, features: torch.Tensor, modality: str) -> torch.Tensor:
    """The UPM as the release computes it: each expert over the whole sequence in turn, then sliced and mixed."""
    queries = upm.config.num_modality_tokens
    tokens = upm.modality_tokens[modality].expand(features.shape[0], -1, -1)
    hidden = torch.cat([tokens, upm.in_proj[modality](features)], dim=1)  # (N, Q + L, H)
    weights = upm.routing_weights(modality)
    mixed = sum(expert(hidden)[:, :queries] * weights[..., k : k + 1] for k, expert in enumerate(upm.experts))
    return upm.out_proj[modality](mixed)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_the_batched_experts_give_the_per_expert_outputs_and_gradients(checkpointing):
    upm = toy_projection().train()
    features = _features(batch=3, length=11)
    if checkpointing:  # what `gradient_checkpointing_enable` sets on each block
        from functools import partial

        from torch.utils.checkpoint import checkpoint

        for module in upm.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True
                module._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
    reference = _per_expert(upm, features, "audio")
    reference.square().sum().backward()
    expected = {n: p.grad.clone() for n, p in upm.named_parameters() if p.grad is not None}
    upm.zero_grad()
    batched = upm(features, "audio")
    assert_close(batched, reference, rtol=1e-5, atol=1e-6)
    batched.square().sum().backward()
    got = {n: p.grad for n, p in upm.named_parameters() if p.grad is not None}
    assert set(got) == set(expected) and any(n.startswith("experts.2.") for n in got)
    for name in expected:  # float32 sums in another order: compare each gradient relative to its size
        error = (got[name] - expected[name]).norm() / expected[name].norm()
        assert error < 1e-5, f"{name}: relative error {error:.2e}"
