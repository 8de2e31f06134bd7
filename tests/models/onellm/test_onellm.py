"""OneLLMModel end to end: the official forward and loss for every modality, mixed batches, padding, cache,
generation, errors, gradients, initialisation, the precomputed router, save/load, the release's size.

The reference (`official_reference.py`) reads the release's key names, LLaMA in Meta's layout, so the key map
is exercised too. float32 on CPU; tolerances are explicit.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close
from transformers import AutoModel, AutoModelForImageTextToText, LlamaForCausalLM

from owl2 import IGNORE_INDEX, OneLLMConfig, OneLLMModel
from tests.conftest import REPO
from tests.models.onellm import official_reference as ref
from tests.models.onellm.conftest import ALL, TOY, onellm_config, toy_inputs, toy_onellm

LOGITS_RTOL = 1e-4  # relative error (Frobenius) of the logits over real tokens, float32 (observed ~6e-7)
ALL_LIST = list(ALL)
BLOCK = TOY.modality_tokens + 2  # start tag, modality tokens, end tag
GENERATE = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)


@pytest.fixture(scope="module")
def model():
    return toy_onellm(point_sample_on="rgb")  # the release samples points on their colours


def _placeholder(model, modality: str) -> int:
    return model.config.modality_token_index[modality]


def _official_batch(model, modality, seed=3):
    """The release's layout (`examples`, right-padded with 0, every token a target); owl2's: a placeholder after BOS."""
    examples = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 10, 11, 12, 0, 0]])
    ids = torch.cat([examples[:, :1], torch.full((2, 1), _placeholder(model, modality)), examples[:, 1:]], dim=1)
    mask = (ids != 0).long()
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)  # the release's pad id 0 is owl2's IGNORE_INDEX
    return examples, ids, mask, labels, toy_inputs(modality, batch=2, seed=seed)


@pytest.mark.parametrize("modality", ALL)
def test_logits_and_loss_equal_the_official_forward(model, modality):
    examples, ids, mask, labels, inputs = _official_batch(model, modality)
    sd = ref.release_model_state_dict(model.state_dict(), TOY)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, modality_inputs={modality: inputs}, labels=labels)
        theirs = ref.forward(sd, examples, inputs, modality, TOY)
        official_loss = ref.loss(theirs, examples, TOY.vocab_size)
    assert out.logits.shape == (2, ids.shape[1] - 1 + BLOCK, TOY.vocab_size)
    assert out.attention_mask.sum(1).tolist() == [6 + BLOCK, 4 + BLOCK]
    ours = out.logits[:, BLOCK:]  # the release's `h[:, prefix_len:]`: from the end tag on
    real = examples != 0
    rel = (ours[real] - theirs[real]).norm() / theirs[real].norm()
    assert rel < LOGITS_RTOL, f"relative error {rel:.2e}"
    assert_close(out.loss, official_loss, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modality", ALL)
def test_greedy_tokens_equal_recomputation_and_the_official_greedy(model, modality):
    examples, ids, _, _, inputs = _official_batch(model, modality, seed=4)
    examples, ids, inputs = examples[:1], ids[:1], inputs[:1]
    cached = model.generate(input_ids=ids, modality_inputs={modality: inputs}, **GENERATE)
    recomputed = model.generate(input_ids=ids, modality_inputs={modality: inputs}, use_cache=False, **GENERATE)
    assert torch.equal(cached, recomputed)
    with torch.no_grad():
        official = ref.greedy(ref.release_model_state_dict(model.state_dict(), TOY), examples, inputs, modality, TOY, 4)
    assert cached[:, ids.shape[1]:].tolist() == official.tolist()


def test_text_only_logits_equal_transformers_llama(model):
    """The LLM is LLaMA, unchanged: a prompt without placeholders gives `LlamaForCausalLM`'s logits."""
    llama = LlamaForCausalLM(model.config.text_config).eval()
    llama.model.load_state_dict(model.language_model.state_dict())
    llama.lm_head.load_state_dict(model.lm_head.state_dict())
    ids, mask = _pad([[1, 5, 6, 7, 8], [1, 9, 10]], "left")
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        theirs = llama(ids, attention_mask=mask).logits
    assert_close(ours[mask.bool()], theirs[mask.bool()], rtol=1e-5, atol=1e-5)


# -- mixed batches ---------------------------------------------------------------------------------------------
def _rows(model):
    """Rows with different modalities, two modalities in one row, a text-only row, two images and a trailing input."""
    p = model.config.modality_token_index
    return [
        [1, p["image"], 5, 6],
        [1, p["audio"], 7, p["video"], 8, 9],
        [1, 10, 11, 12, 13, 14, 15],
        [1, p["image"], 16, p["image"], 17, p["point"]],
    ]


def _inputs_of(model, rows, seed=0):
    """One input per placeholder, each modality's in order of appearance across the rows; and each row's own."""
    names = {index: name for name, index in model.config.modality_token_index.items()}
    per_row = [[names[t] for t in row if t < 0] for row in rows]
    counts = {m: sum(row.count(m) for row in per_row) for m in {m for row in per_row for m in row}}
    batch = {m: toy_inputs(m, batch=n, seed=seed + i) for i, (m, n) in enumerate(sorted(counts.items()))}
    used, alone = dict.fromkeys(batch, 0), []
    for row in per_row:
        mine = {}
        for m in dict.fromkeys(row):
            n = row.count(m)
            mine[m] = batch[m][used[m] : used[m] + n]
            used[m] += n
        alone.append(mine or None)
    return batch, alone


def _pad(rows, side):
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, span], mask[i, span] = torch.tensor(row), 1
    return ids, mask


@pytest.mark.parametrize("pad_side", ["left", "right"])
def test_each_row_of_a_padded_mixed_batch_equals_the_row_alone(model, pad_side):
    rows = _rows(model)
    batch, alone = _inputs_of(model, rows)
    ids, mask = _pad(rows, pad_side)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, modality_inputs=batch, padding_side=pad_side)
        for i, row in enumerate(rows):
            single = model(torch.tensor([row]), modality_inputs=alone[i]).logits[0]
            real = out.attention_mask[i].bool()
            assert int(real.sum()) == len(row) + sum(t < 0 for t in row) * (BLOCK - 1)
            # Tolerances, not bit-equality: batch shapes change the kernels' summation order.
            assert_close(out.logits[i][real], single, rtol=1e-4, atol=1e-5)


def test_the_loss_skips_spliced_tokens_and_padding_and_is_token_weighted(model):
    rows = _rows(model)
    batch, alone = _inputs_of(model, rows)
    ids, mask = _pad(rows, "right")
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)  # placeholders stay: the splice never supervises them
    with torch.no_grad():
        batch_loss = model(ids, attention_mask=mask, modality_inputs=batch, labels=labels).loss
        total, count = 0.0, 0
        for row, inputs in zip(rows, alone):
            row_ids = torch.tensor([row])
            row_labels = row_ids.masked_fill(row_ids < 0, IGNORE_INDEX)
            n = int((row_labels[0, 1:] != IGNORE_INDEX).sum())  # targets after the shift
            total, count = total + model(row_ids, modality_inputs=inputs, labels=row_labels).loss * n, count + n
    assert_close(batch_loss, total / count, rtol=1e-5, atol=1e-6)


def test_left_padded_generation_is_cached_correctly_and_each_row_generates_what_it_does_alone(model):
    rows = _rows(model)
    batch, alone = _inputs_of(model, rows, seed=5)
    ids, mask = _pad(rows, "left")
    cached = model.generate(input_ids=ids, attention_mask=mask, modality_inputs=batch, **GENERATE)
    recomputed = model.generate(input_ids=ids, attention_mask=mask, modality_inputs=batch, use_cache=False, **GENERATE)
    assert torch.equal(cached, recomputed)
    for i, (row, inputs) in enumerate(zip(rows, alone)):
        single = model.generate(input_ids=torch.tensor([row]), modality_inputs=inputs, **GENERATE)
        assert torch.equal(single[0, len(row):], cached[i, ids.shape[1]:]), f"row {i}"


def test_beams_and_several_sequences_per_prompt_repeat_each_rows_inputs_with_the_row(model):
    rows = _rows(model)
    batch, alone = _inputs_of(model, rows, seed=7)
    ids, mask = _pad(rows, "left")
    beams = dict(GENERATE, max_new_tokens=3, num_beams=2, num_return_sequences=2)
    batched = model.generate(input_ids=ids, attention_mask=mask, modality_inputs=batch, **beams)
    for i, (row, inputs) in enumerate(zip(rows, alone)):
        single = model.generate(input_ids=torch.tensor([row]), modality_inputs=inputs, **beams)
        assert torch.equal(single[:, len(row) :], batched[2 * i : 2 * i + 2, ids.shape[1] :]), f"row {i}"


def test_cached_logits_equal_a_full_forward(model):
    p = model.config.modality_token_index
    inputs = {"audio": toy_inputs("audio", 1), "imu": toy_inputs("imu", 1)}
    with torch.no_grad():
        prefill = model(torch.tensor([[1, p["audio"], 5, p["imu"]]]), modality_inputs=inputs, use_cache=True)
        assert prefill.cache.get_seq_length() == 2 + 2 * BLOCK  # every spliced position is in the cache
        step_mask = torch.cat([prefill.attention_mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
        step = model(torch.tensor([[9]]), attention_mask=step_mask, cache=prefill.cache, use_cache=True)
        full = model(torch.tensor([[1, p["audio"], 5, p["imu"], 9]]), modality_inputs=inputs).logits
    assert_close(step.logits[0, -1], full[0, -1], rtol=1e-5, atol=1e-5)


def test_eager_and_sdpa_attention_agree(model):
    rows = _rows(model)
    batch, _ = _inputs_of(model, rows)
    ids, mask = _pad(rows, "left")
    logits = {}
    for backend in ("eager", "sdpa"):
        other = toy_onellm(attn_implementation=backend, point_sample_on="rgb")
        with torch.no_grad():
            out = other(ids, attention_mask=mask, modality_inputs=batch, padding_side="left")
        logits[backend] = out.logits[out.attention_mask.bool()]
    assert_close(logits["sdpa"], logits["eager"], rtol=1e-4, atol=1e-5)


# -- errors ----------------------------------------------------------------------------------------------------
_DEFAULT_IDS = {"image": -200, "video": -201, "audio": -202, "point": -203, "rgbd": -204, "rgbn": -205,
                "fmri": -206, "imu": -207}  # fmt: skip


def _error_cases():
    image, video, audio = (_DEFAULT_IDS[m] for m in ("image", "video", "audio"))
    a, img = toy_inputs("audio", 1), toy_inputs("image", 1)
    shapes = {
        "image": ((1, 3, 32, 28), "(N, 3, 28, 28)"),
        "video": ((1, 2, 3, 28, 28), f"(N, {TOY.video_frames}, 3, 28, 28)"),
        "rgbd": ((1, 3, 28, 28), "(N, 2, 3, 28, 28)"),
        "audio": ((1, 1, TOY.mel_bins, 30), f"(N, 1, {TOY.mel_bins}, {TOY.audio_frames})"),
        "point": ((1, TOY.points, 3), "(N, P, 6)"),
        "imu": ((1, 6, 21), f"(N, 6, {TOY.imu_samples})"),
        "fmri": ((1, TOY.voxels), f"(N, 1, {TOY.voxels})"),
    }
    cases = [
        ([[1, audio, 5, audio]], {"audio": a}, r"hold 2 audio placeholders \(-202\) but 1 audio inputs were given: "
                                               r"modality_inputs\['audio'\] must have one per placeholder"),
        ([[1, audio, 5]], {"image": img}, r"hold 0 image placeholders \(-200\) but 1 image inputs were given"),
        ([[1, audio, 5, image]], {"image": img}, r"hold 1 audio placeholders \(-202\) but 0 audio inputs"),
        ([[1, audio, 5, video]], None, r"input_ids hold video \(-201\), audio \(-202\) placeholders but no "
                                       r"modality_inputs were given"),
        ([[1, audio, -999]], {"audio": a}, r"hold 1 negative ids that are no placeholder of this model"),
        ([[1, audio]], {"depth": a}, r"modality_inputs holds \['depth'\], but this model was built for \['image'"),
    ]
    for modality, (shape, expected) in shapes.items():
        message = re.escape(f"{modality} input must have shape {expected} ") + ".*" + re.escape(f"got {shape}")
        cases.append(([[1, _DEFAULT_IDS[modality], 5]], {modality: torch.zeros(shape)}, message))
    return cases


@pytest.mark.parametrize(("ids", "inputs", "message"), _error_cases())
def test_wrong_placeholders_or_inputs_are_refused_naming_the_modality_and_the_shapes(model, ids, inputs, message):
    assert model.config.modality_token_index == _DEFAULT_IDS
    with pytest.raises(ValueError, match=message):
        model(torch.tensor(ids), modality_inputs=inputs)


def test_inputs_with_a_filled_cache_and_modalities_the_model_lacks_are_refused():
    model = toy_onellm(modalities=("image", "audio"))
    with torch.no_grad():
        prefill = model(torch.tensor([[1, -200, 5]]), modality_inputs={"image": toy_inputs("image", 1)}, use_cache=True)
        with pytest.raises(ValueError, match="modality_inputs can only be given with an empty cache"):
            model(torch.tensor([[-202]]), modality_inputs={"audio": toy_inputs("audio", 1)}, cache=prefill.cache)
        with pytest.raises(ValueError, match=r"modality_inputs holds \['video'\], but this model was built for "
                                             r"\['image', 'audio'\]"):  # fmt: skip
            model(torch.tensor([[1, -201]]), modality_inputs={"video": toy_inputs("video", 1)})
        with pytest.raises(ValueError, match=r"1 negative ids that are no placeholder of this model \({'image': -200, "
                                             r"'audio': -202}\)"):  # fmt: skip
            model(torch.tensor([[1, -201, -200]]), modality_inputs={"image": toy_inputs("image", 1)})


# -- training, initialisation, inference -----------------------------------------------------------------------
def _touched(model, ids, inputs) -> set[str]:
    model.zero_grad(set_to_none=True)
    model.train()
    model(ids, modality_inputs=inputs, labels=ids.masked_fill(ids < 0, IGNORE_INDEX)).loss.backward()
    model.eval()
    return {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_gradients_reach_exactly_the_parameters_they_should():
    model = toy_onellm()
    names = {name for name, _ in model.named_parameters()}
    llm = {n for n in names if n.startswith(("language_model.", "lm_head."))}
    assert _touched(model, torch.tensor([[1, 5, 6, 7]]), None) == llm

    audio = _touched(model, torch.tensor([[1, -202, 6, 7]]), {"audio": toy_inputs("audio", 1)})
    clip = {n for n in names if n.startswith("encoder.clip.")} - {"encoder.clip.patch_embed.proj.weight",
                                                                   "encoder.clip.pos_embed"}  # fmt: skip
    experts = {n for n in names if n.startswith("projection.experts.")}
    own = {n for n in names if re.search(r"\.audio(\.|$)", n)}  # tokenizer, position table, tokens, router, ...
    assert audio == llm | clip | experts | own
    assert len(own) == 2 + 1 + 1 + 4 + 4 + 4 + 2  # tokenizer w, b; table; tokens; in/router/out (w, b) x2; tags


def test_activation_checkpointing_gives_the_same_gradients():
    ids, inputs = torch.tensor([[1, -201, 6, 7]]), {"video": toy_inputs("video", 1)}
    grads = []
    for checkpointing in (False, True):
        model = toy_onellm()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.encoder.clip.grad_checkpointing
        _touched(model, ids, inputs)
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def _assert_release_init(model):
    """The free parameters and the layers the release trains from scratch are as its constructor draws them."""
    upm, encoder = model.projection, model.encoder
    tokens = torch.cat([t.flatten() for t in upm.modality_tokens.values()])  # N(0, 0.02), 1,280 draws
    tables = torch.cat([t.flatten() for t in encoder.pos_embeds.values()])  # N(0, 0.02)
    for free in (tokens, tables):
        assert abs(free.std().item() - 0.02) < 0.002 and abs(free.mean().item()) < 0.002
    tags = torch.cat([t.flatten() for t in (*upm.start_tags.values(), *upm.end_tags.values())])  # torch.rand
    assert 0.0 <= tags.min().item() and tags.max().item() < 1.0 and abs(tags.mean().item() - 0.5) < 0.03
    for name, param in upm.experts.named_parameters():  # Xavier-uniform (`default_linear_init`); RMSNorms at 1
        if param.dim() == 2:
            bound = math.sqrt(6 / sum(param.shape))
            assert param.abs().max().item() <= bound and param.std().item() > 0.8 * bound / math.sqrt(3), name
        else:
            assert torch.equal(param, torch.ones_like(param)), name
    pytorch_default = [encoder.tokenizers["fmri"].proj, encoder.tokenizers["audio"].proj, upm.routers["imu"].fc1,
                       upm.in_proj["point"].linear, upm.out_proj["rgbd"].linear]  # fmt: skip
    for layer in pytorch_default:  # kaiming-uniform(a=sqrt(5)): |w| and |b| <= 1/sqrt(fan_in)
        bound = 1 / math.sqrt(layer.weight[0].numel())
        assert layer.weight.abs().max().item() <= bound and layer.bias.abs().max().item() <= bound
        assert layer.weight.std().item() > 0.8 * bound / math.sqrt(3)
    norm = upm.out_proj["video"].norm
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_a_fresh_model_starts_from_the_release_initialisation():
    torch.manual_seed(0)
    model = OneLLMModel(onellm_config())
    _assert_release_init(model)
    # The LLM as LLaMA's init leaves it (initializer_range 0.08 in the toy), CLIP's free parameters as timm's.
    assert abs(model.language_model.embed_tokens.weight[1:].std().item() - TOY.llm_init) < 0.01
    assert model.encoder.clip.cls_token.abs().max().item() < 1e-4


def test_what_a_checkpoint_lacks_starts_from_the_release_initialisation(model, tmp_path):
    """The start of training: LLaMA and CLIP loaded, the tokenizers, tables and UPM drawn as the release draws them."""
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    kept = {k: v for k, v in weights.items() if k.startswith(("language_model.", "lm_head.", "encoder.clip."))}
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = OneLLMModel.from_pretrained(tmp_path)
    for name, tensor in loaded.state_dict().items():
        if name in kept:
            assert torch.equal(tensor, kept[name]), name
    _assert_release_init(loaded)


def test_the_precomputed_router_leaves_the_logits_unchanged(model):
    rows = _rows(model)
    batch, _ = _inputs_of(model, rows)
    ids, mask = _pad(rows, "left")
    assert set(model.projection._router_cache) == set(ALL)  # eval() precomputed every modality's table
    with torch.no_grad():
        precomputed = model(ids, attention_mask=mask, modality_inputs=batch).logits
        cache, model.projection._router_cache = model.projection._router_cache, {}
        try:
            dynamic = model(ids, attention_mask=mask, modality_inputs=batch).logits
        finally:
            model.projection._router_cache = cache
    assert_close(precomputed, dynamic, rtol=1e-6, atol=1e-6)
    fresh = toy_onellm().train()
    assert fresh.projection._router_cache == {}


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    rows = _rows(model)
    batch, _ = _inputs_of(model, rows)
    ids, mask = _pad(rows, "left")
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, modality_inputs=batch, padding_side="left").logits
        for auto in (OneLLMModel, AutoModel, AutoModelForImageTextToText):
            loaded = auto.from_pretrained(tmp_path)
            assert isinstance(loaded, OneLLMModel) and not loaded.training
            assert (loaded.config.modalities, loaded.config.modality_token_index) == (ALL_LIST, _DEFAULT_IDS)
            # The weights round-trip exactly; the logits only up to rounding, since the kernels' rounding may
            # depend on how the loaded tensors lie in memory (seen: 1e-6 apart in the CI run).
            saved = model.state_dict()
            for name, tensor in loaded.state_dict().items():
                assert torch.equal(tensor, saved[name]), name
            got = loaded(ids, attention_mask=mask, modality_inputs=batch, padding_side="left").logits
            assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_release_preset_has_the_release_parameter_count():
    config = OneLLMConfig.from_json_file(REPO / "configs" / "model" / "onellm-7b.json")
    with torch.device("meta"):
        model = OneLLMModel(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    # LLaMA-2-7B (`config/llama2/7B.json`): embeddings and output 2 x 32000 x 4096; per layer wq, wk, wv, wo
    # 4 x 4096^2, w1, w2, w3 3 x 4096 x 11008, two RMSNorms; the final RMSNorm.
    llama = 2 * 32000 * 4096 + 32 * (4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096) + 4096
    assert count(model.language_model) + count(model.lm_head) == llama == 6_738_415_616
    # open_clip's ViT-L/14 visual tower at 224 px without `visual.proj` (never applied): conv1 (no bias),
    # class token, 257-row position table, ln_pre, 24 blocks (ln_1; in_proj 3 x 1024^2 + bias; out_proj;
    # ln_2; c_fc 1024 x 4096 + bias; c_proj 4096 x 1024 + bias), ln_post.
    block = 2 * 1024 + (3 * 1024 * 1024 + 3 * 1024) + (1024 * 1024 + 1024) + 2 * 1024 \
        + (1024 * 4096 + 4096) + (4096 * 1024 + 1024)  # fmt: skip
    clip = 1024 * 3 * 14 * 14 + 1024 + 257 * 1024 + 2 * 1024 + 24 * block + 2 * 1024
    assert count(model.encoder.clip) == clip == 303_179_776
    # The tokenizers: audio Conv2d(1, 1024, 16), point Conv2d(6, 1024, 1), imu Conv1d(6, 1024, 10, bias=False),
    # fmri Linear(15724, 8192); and their own position tables of 1213, 1025, 392 and 9 rows.
    tokenizers = (1024 * 16 * 16 + 1024) + (6 * 1024 + 1024) + 6 * 1024 * 10 + (15724 * 8192 + 8192)
    tables = (1213 + 1025 + 392 + 9) * 1024
    assert count(model.encoder) == clip + tokenizers + tables
    # The UPM: three experts of eight blocks and the per-modality parts (tests/models/onellm/test_upm.py).
    assert count(model.projection) == 384_393_240
    total = llama + clip + tokenizers + tables + 384_393_240
    assert count(model) == total == 7_557_841_944  # 15.1 GB in bf16, as the released consolidated.00-of-01.pth
