"""The modality-adaptive decoder against transformers' LLaMA and against per-token references."""

import pytest
import torch
from transformers import LlamaForCausalLM

from owl2.checkpoint.llama import llama_to_owl2, owl2_to_llama
from owl2.models.decoder import ModalityLinear, ModalityRMSNorm, ModalityRouting
from tests.conftest import toy_config, toy_model


def _mixed_ids(batch=2, seq=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = (torch.rand(batch, seq, generator=generator) > 0.5).long()
    ids[0, 0], ids[0, 1] = 0, 1  # both modalities present
    return ids


def test_routing_is_uniform_when_one_modality_is_present():
    routing = ModalityRouting.from_ids(torch.ones(2, 5, dtype=torch.long))
    assert routing.single == 1 and routing.indices is None and routing.counts is None
    mixed = ModalityRouting.from_ids(_mixed_ids())
    flat = mixed.modality_ids.flatten()
    assert mixed.single is None and mixed.counts[:2] == (int((flat == 0).sum()), int((flat == 1).sum()))
    for modality, index in enumerate(mixed.indices):
        assert bool((flat[index] == modality).all()) and bool((index.diff() > 0).all())  # its tokens, in order
    assert torch.equal(torch.cat([flat[index] for index in mixed.indices])[mixed.inverse], mixed.modality_ids)


def test_modality_linear_applies_each_branch_to_its_own_tokens():
    linear = ModalityLinear(16, 8, bias=True)
    x = torch.randn(2, 7, 16)
    ids = _mixed_ids()
    expected = torch.where(ids[..., None] == 1, linear["image"](x), linear["text"](x))
    torch.testing.assert_close(linear(x, ModalityRouting.from_ids(ids)), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(linear(x, ModalityRouting.uniform((2, 7), 0, x.device)), linear["text"](x), rtol=0, atol=0)


def test_modality_norm_scales_by_each_tokens_gain():
    norm = ModalityRMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm["text"].weight.uniform_(0.5, 1.5)
        norm["image"].weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 7, 16)
    ids = _mixed_ids()
    expected = torch.where(ids[..., None] == 1, norm["image"](x), norm["text"](x))
    torch.testing.assert_close(norm(x, ModalityRouting.from_ids(ids)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_text_only_logits_equal_transformers_llama(attn_implementation):
    """Given a LLaMA's weights (through the production converter), text-only logits are LLaMA's."""
    config = toy_config()
    torch.manual_seed(1)
    llama = LlamaForCausalLM(config.text_config).eval()
    llama.config._attn_implementation = attn_implementation
    model = toy_model(attn_implementation=attn_implementation)
    missing, unexpected = model.load_state_dict(llama_to_owl2(llama.state_dict()), strict=False)
    assert not unexpected
    assert all(key.startswith(("vision_model.", "abstractor.")) for key in missing)

    ids = torch.randint(3, config.text_config.vocab_size, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = llama(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
        got = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)


def test_llama_keys_round_trip_through_the_converter():
    llama = LlamaForCausalLM(toy_config().text_config)
    state = llama.state_dict()
    back = owl2_to_llama(llama_to_owl2(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_unexpected_llama_key_is_named():
    with pytest.raises(KeyError, match="vision_tower.foo"):
        llama_to_owl2({"vision_tower.foo": torch.zeros(1)})
