"""On a CUDA device: the GPU paths agree with the CPU's (skipped without one; `tools/gpu_check.py` runs them)."""

from __future__ import annotations

import copy

import pytest
import torch

from owl2.compile import generation_compile_kwargs
from tests.conftest import toy_images, toy_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _inputs(model, batch: int = 2, length: int = 12):
    ids = torch.randint(3, model.config.text_config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    ids[:, 1] = model.config.image_token_index
    return ids, toy_images(batch, model.config)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 0.1)])
def test_cuda_log_probabilities_match_the_cpu(dtype, tolerance):
    model = toy_model()
    ids, pixels = _inputs(model)
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels).logits.log_softmax(-1)
        cuda = copy.deepcopy(model).cuda().to(dtype)
        got = cuda(input_ids=ids.cuda(), pixel_values=pixels.cuda().to(dtype)).logits.float().log_softmax(-1).cpu()
    assert (got - expected).abs().max().item() <= tolerance


def test_compiled_static_decoding_on_cuda_matches_eager():
    model = toy_model().cuda()
    ids, pixels = _inputs(model)
    options = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    inputs = dict(input_ids=ids.cuda(), pixel_values=pixels.cuda())
    expected = model.generate(**inputs, **options)
    assert torch.equal(model.generate(**inputs, **options, **generation_compile_kwargs(model)), expected)
