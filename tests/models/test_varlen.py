"""`attn_implementation="owl2_varlen"`: the padding-free path computes what sdpa computes, on the real tokens."""

from __future__ import annotations

import pytest
import torch

from owl2.constants import IGNORE_INDEX
from owl2.models.varlen import NAME, segment_boundaries
from tests.conftest import toy_model

IDS = torch.randint(3, 200, (3, 20), generator=torch.Generator().manual_seed(0))
PADDED = torch.ones(3, 20, dtype=torch.long)
PADDED[1, 15:], PADDED[2, 9:] = 0, 0  # right padding, as training pads
PACKED = torch.tensor([[1] * 7 + [2] * 9 + [3] * 4, [1] * 20, [1] * 10 + [2] * 6 + [0] * 4])  # samples numbered


def test_segments_start_where_positions_restart():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 0, 0, 1, 2, 3]])  # packed row; a left-padded row
    cu_seqlens, longest = segment_boundaries(positions)
    assert cu_seqlens.tolist() == [0, 3, 5, 6, 7, 8, 12] and cu_seqlens.dtype == torch.int32
    assert longest == 4


def _forward(model, implementation: str, mask: torch.Tensor):
    model.config.text_config._attn_implementation = implementation
    model.zero_grad(set_to_none=True)
    labels = IDS.masked_fill(mask == 0, IGNORE_INDEX)
    out = model(input_ids=IDS, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("mask", [PADDED, PACKED], ids=["padded", "packed"])
def test_training_forward_and_gradients_match_sdpa(mask):
    model = toy_model().train()
    ref, ref_grads = _forward(model, "sdpa", mask)
    out, grads = _forward(model, NAME, mask)
    real = mask > 0
    torch.testing.assert_close(out.logits[real], ref.logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_generation_over_a_cache_falls_back_to_sdpa():
    model = toy_model()
    prompt, mask = IDS[:2, :12], torch.ones(2, 12, dtype=torch.long)
    mask[1, :3] = 0  # left padding, as generation pads
    options = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    model.config.text_config._attn_implementation = "sdpa"
    expected = model.generate(input_ids=prompt, attention_mask=mask, **options)
    model.config.text_config._attn_implementation = NAME
    assert torch.equal(model.generate(input_ids=prompt, attention_mask=mask, **options), expected)


def test_dropout_is_refused():
    model = toy_model().train()
    model.config.text_config._attn_implementation = NAME
    for layer in model.language_model.layers:
        layer.self_attn.attention_dropout = 0.1
    with pytest.raises(ValueError, match="no dropout"):
        model(input_ids=IDS, attention_mask=PACKED)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_kernel_matches_sdpa_in_bf16():
    model = toy_model().cuda().to(torch.bfloat16).train()
    mask = PACKED.cuda()
    ids = IDS.cuda()
    logits = {}
    for implementation in ("sdpa", NAME):
        model.config.text_config._attn_implementation = implementation
        with torch.no_grad():
            logits[implementation] = model(input_ids=ids, attention_mask=mask).logits.float()
    real = mask > 0
    torch.testing.assert_close(logits[NAME][real], logits["sdpa"][real], atol=3e-2, rtol=3e-2)
