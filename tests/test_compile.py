"""`owl2.compile`: compiled decoding and compiled training blocks compute what eager mode computes, in one graph
per block (`fullgraph=True`: a graph break fails), without recompiling as batches change.

Inductor (the real code generator) where the numbers are compared; `aot_eager` (dynamo's tracing and autograd
without code generation, seconds instead of a minute on 2 cores) where only tracing is in question.
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from owl2 import IMAGE_TOKEN_INDEX
from owl2.compile import compile_blocks, compile_for_generation, compiler_stats, generation_compile_kwargs
from owl2.constants import ONELLM_MODALITY_TOKEN_INDEX
from tests.conftest import toy_images, toy_model
from tests.models.onellm.conftest import toy_inputs, toy_onellm

ATOL = 1e-5
needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="inductor generates C++: no g++ on this machine")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _generate(model, backend: str | None, **inputs):
    compiled = generation_compile_kwargs(model, backend=backend) if backend else {}
    out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0,
                         output_scores=True, return_dict_in_generate=True, **compiled)  # fmt: skip
    return out.sequences, torch.stack(out.scores).nan_to_num(0.0, 0.0, 0.0)  # min_new_tokens masks EOS with -inf


def _assert_same_generation(model, backend: str, **inputs):
    eager_ids, eager_scores = _generate(model, None, **inputs)
    static_ids, static_scores = _generate(model, None, cache_implementation="static", **inputs)
    ids, scores = _generate(model, backend, **inputs)
    assert torch.equal(static_ids, eager_ids) and torch.equal(ids, eager_ids)
    torch.testing.assert_close(static_scores, eager_scores, rtol=0, atol=ATOL)
    torch.testing.assert_close(scores, eager_scores, rtol=0, atol=ATOL)
    again, _ = _generate(model, backend, **inputs)  # the compiled step is reused, not recompiled
    assert torch.equal(again, eager_ids)
    assert compiler_stats()["graph_breaks"] == 0


@needs_compiler
def test_compiled_decoding_matches_eager_owl2():
    """Left padding, an image row and a text-only row: the static cache is sized for the spliced rows."""
    model = toy_model()
    input_ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7, 8], [0, 0, 1, 9, 3]])
    attention_mask = (input_ids != 0).long()
    _assert_same_generation(model, "inductor", input_ids=input_ids, attention_mask=attention_mask,
                            pixel_values=toy_images(1, model.config))  # fmt: skip


def test_compiled_decoding_matches_eager_onellm_with_several_modalities():
    model = toy_onellm(modalities=("image", "audio", "imu"))
    index = ONELLM_MODALITY_TOKEN_INDEX
    input_ids = torch.tensor([[1, index["audio"], 5, index["imu"], 7], [0, 1, index["image"], 9, 3]])
    modality_inputs = {m: toy_inputs(m, batch=1) for m in ("image", "audio", "imu")}
    _assert_same_generation(model, "aot_eager", input_ids=input_ids, attention_mask=(input_ids != 0).long(),
                            modality_inputs=modality_inputs)  # fmt: skip


def test_static_cache_is_sized_for_the_spliced_rows():
    model = toy_model()
    input_ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX, 4], [1, 5, 6, 7]])
    assert model.splice_growth(input_ids) == 2 * (model.config.num_image_tokens - 1)
    out = model.generate(input_ids=input_ids, pixel_values=toy_images(2, model.config), max_new_tokens=3,
                         do_sample=False, pad_token_id=0, cache_implementation="static",
                         return_dict_in_generate=True)  # fmt: skip
    longest = 4 + 2 * (model.config.num_image_tokens - 1)
    assert out.cache.get_max_length() >= longest + 3 - 1  # transformers alone sizes it 4 + 3 - 1


def _owl2_batch(images: int, length: int, seed: int, one_row: bool = False) -> dict:
    """Two rows of `length` tokens, the second right-padded by 2, holding `images` placeholders (one per row in
    turn, or all in the first)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 100, (2, length), generator=generator)
    for i in range(images):
        row, column = (0, 2 + i) if one_row else (i % 2, 2 + i // 2)
        input_ids[row, column] = IMAGE_TOKEN_INDEX
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, length - 2 :] = 0  # right padding, as the collator pads
    labels = input_ids.clamp(min=0).masked_fill(attention_mask == 0, -100)  # placeholders are never targets
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if images:
        batch["pixel_values"] = torch.randn(images, 3, 56, 56, generator=generator)
    return batch


def _step(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_step(model, eager, batch) -> None:
    loss, grads = _step(model, batch)
    expected_loss, expected = _step(eager, batch)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=ATOL)
    assert grads.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-4, atol=ATOL, msg=name)


@needs_compiler
def test_compiled_blocks_train_like_eager_and_do_not_recompile():
    """Inductor's kernels, on two images in rows of text with padding (the mixed path through every block) and
    on text alone; batches with other lengths and image placements reuse the graphs: the routing's token counts
    reach the blocks as dynamic sizes, not as constants a graph would be specialised on."""
    eager = toy_model().train()
    model = copy.deepcopy(eager)
    names = compile_blocks(model, backend="inductor")
    assert {"language_model.layers.0", "vision_model.blocks.0", "abstractor.layers.0"} <= set(names)
    _assert_same_step(model, eager, _owl2_batch(images=2, length=12, seed=0))
    graphs = compiler_stats()["graphs"]
    for length, one_row in [(17, True), (9, False)]:
        _assert_same_step(model, eager, _owl2_batch(images=2, length=length, seed=length, one_row=one_row))
    assert compiler_stats()["graphs"] == graphs
    _assert_same_step(model, eager, _owl2_batch(images=0, length=10, seed=3))
    assert compiler_stats()["graph_breaks"] == 0
    assert model.state_dict().keys() == eager.state_dict().keys()  # the modules stayed; only forward changed


def test_compiled_blocks_trace_onellm_with_activation_checkpointing():
    eager = toy_onellm(modalities=("image", "audio")).train()
    eager.activation_checkpointing_enable({"use_reentrant": False})
    model = copy.deepcopy(eager)
    compile_blocks(model, backend="aot_eager")
    index = ONELLM_MODALITY_TOKEN_INDEX
    input_ids = torch.tensor([[1, index["audio"], 5, 6, 7], [1, index["image"], 9, 3, 4]])
    batch = {"input_ids": input_ids, "labels": input_ids.clamp(min=0),
             "modality_inputs": {m: toy_inputs(m, batch=1) for m in ("image", "audio")}}  # fmt: skip
    _assert_same_step(model, eager, batch)
    assert compiler_stats()["graph_breaks"] == 0


def test_compile_blocks_refuses_a_model_without_block_classes():
    with pytest.raises(ValueError, match="_no_split_modules"):
        compile_blocks(torch.nn.Linear(2, 2))


def test_compile_blocks_refuses_the_host_synced_varlen_attention():
    model = toy_model()
    model.config.text_config._attn_implementation = "owl2_varlen"
    with pytest.raises(ValueError, match="owl2_varlen"):
        compile_blocks(model)


def test_compile_for_generation_compiles_the_prompt_blocks_once_and_decodes_the_same():
    model = toy_model()
    input_ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7, 8], [0, 0, 1, 9, 3]])
    inputs = dict(input_ids=input_ids, attention_mask=(input_ids != 0).long(), pixel_values=toy_images(1, model.config))
    options = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    expected = model.generate(**inputs, **options)
    kwargs = compile_for_generation(model, backend="aot_eager")
    block = model.vision_model.blocks[0] if hasattr(model.vision_model, "blocks") else None
    assert block is not None and block._owl2_compiled_with == ("aot_eager", None)
    assert not hasattr(model.language_model.layers[0], "_owl2_compiled_with")  # over a cache: per-layer graphs
    forward = block.forward
    assert kwargs["cache_implementation"] == "static"
    assert compile_for_generation(model, backend="aot_eager") == kwargs and block.forward is forward  # once
    assert torch.equal(model.generate(**inputs, **options, **kwargs), expected)
    assert compiler_stats()["graph_breaks"] == 0
