"""OneLLM's stage policies (`owl2.train.policy.ONELLM_STAGES`) and Image Init (`owl2.models.image_init`) on the toy
model: one AdamW step per stage changes exactly what the policy trains and the batch's gradient reaches."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from owl2.constants import IGNORE_INDEX, ONELLM_MODALITIES
from owl2.models.image_init import init_from_image
from owl2.train.policy import STAGES, apply_policy, onellm_align_patterns, trainable_patterns
from tests.models.onellm.conftest import toy_inputs, toy_onellm

TEXT = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])


@pytest.fixture(scope="module")
def pristine():
    return toy_onellm()


@pytest.fixture
def model(pristine):
    return copy.deepcopy(pristine)


# -- parameter sets, by name, independent of the policy's globs ---------------------------------------------------
def _names(model) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def _llm(model) -> set[str]:
    return {n for n in _names(model) if n.startswith(("language_model.", "lm_head."))}


def _clip(model) -> set[str]:
    return {n for n in _names(model) if n.startswith("encoder.clip.")}


def _experts(model) -> set[str]:
    return {n for n in _names(model) if n.startswith("projection.experts.")}


def _own(model, modality: str) -> set[str]:
    """A modality's tokenizer, position table, modality tokens, projections, router and tags."""
    return {n for n in _names(model) if re.search(rf"\.{modality}(\.|$)", n)}


# -- one step --------------------------------------------------------------------------------------------------------
def _batch(model, modality: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    placeholder = model.config.modality_token_index[modality]
    ids = torch.cat([TEXT[:, :1], torch.full((2, 1), placeholder), TEXT[:, 1:]], dim=1)
    return ids, {modality: toy_inputs(modality, batch=2, seed=4)}


def _logits(model, ids, inputs=None) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids, modality_inputs=inputs).logits


def _step(model, ids, inputs) -> tuple[set[str], set[str]]:
    """One AdamW step on the batch: (names the gradient reached, names whose tensor changed)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1)
    model.train()
    model(ids, modality_inputs=inputs, labels=ids.masked_fill(ids < 0, IGNORE_INDEX)).loss.backward()
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    model.eval()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    return reached, changed


ALIGN = [  # (modalities aligned, modality of the batch): stages I, II and III
    (["image"], "image"),
    (["video", "audio", "point"], "audio"),
    (["video", "audio", "point"], "video"),
    (["rgbd", "rgbn", "imu", "fmri"], "fmri"),
    (["rgbd", "rgbn", "imu", "fmri"], "imu"),
]


@pytest.mark.parametrize(("modalities", "batch_modality"), ALIGN)
def test_an_alignment_step_changes_the_experts_and_the_batch_modalitys_own_parts_only(
    model, modalities, batch_modality
):
    ids, inputs = _batch(model, batch_modality)
    trainable = set(apply_policy(model, trainable_patterns("onellm_align", modalities=modalities)))
    assert trainable == _experts(model).union(*(_own(model, m) for m in modalities))
    text_before = _logits(model, TEXT)

    reached, changed = _step(model, ids, inputs)

    assert changed == reached & trainable == _experts(model) | _own(model, batch_modality)
    assert not changed & (_clip(model) | _llm(model))  # CLIP and the LLM bit-identical
    assert torch.equal(_logits(model, TEXT), text_before)  # so text-only outputs cannot change


def test_instruction_tuning_as_the_paper_changes_the_llm_only(model):
    ids, inputs = _batch(model, "audio")
    assert set(apply_policy(model, trainable_patterns("onellm_instruct"))) == _llm(model)
    reached, changed = _step(model, ids, inputs)
    assert reached == changed == _llm(model)


def test_instruction_tuning_as_the_release_changes_everything_the_batch_reaches_but_clip(model):
    ids, inputs = _batch(model, "point")
    patterns = trainable_patterns("onellm_instruct_release", modalities=model.config.modalities)
    assert set(apply_policy(model, patterns)) == _names(model) - _clip(model)
    reached, changed = _step(model, ids, inputs)
    assert changed == reached == _llm(model) | _experts(model) | _own(model, "point")


def test_a_policy_for_a_modality_the_model_lacks_is_refused():
    model = toy_onellm(modalities=("image", "video"))
    with pytest.raises(ValueError, match=r"match no parameter"):
        apply_policy(model, onellm_align_patterns(["audio"]))
    assert len(apply_policy(model, onellm_align_patterns(["video"]))) == len(_experts(model) | _own(model, "video"))


def test_the_mplug_owl2_stages_are_unchanged():
    assert trainable_patterns("pretrain") == STAGES["pretrain"]
    assert trainable_patterns("instruct", ["abstractor.*"]) == ("abstractor.*",)
    assert trainable_patterns("onellm_align", ["projection.*"]) == ("projection.*",)  # an override needs no modalities


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: trainable_patterns("onellm_align", modalities=["image", "sound"]), r"unknown: \['sound'\]"),
        (lambda: trainable_patterns("onellm_align", modalities=["audio", "audio"]), r"distinct"),
        (lambda: trainable_patterns("onellm_align"), r"'onellm_align' needs the modalities"),
        (lambda: trainable_patterns("onellm_instruct_release", modalities=[]), r"name at least one modality"),
        (lambda: trainable_patterns("pretrain", modalities=["image"]), r"'pretrain' is mPLUG-Owl2's"),
        (lambda: trainable_patterns("onellm_pretrain"), r"'onellm_align', 'onellm_instruct', .*'onellm_pretrain'"),
    ],
)
def test_bad_stages_and_modalities_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- Image Init ------------------------------------------------------------------------------------------------------
def test_image_init_copies_the_images_projection_parts_into_independent_tensors(model):
    before = {n: t.clone() for n, t in model.state_dict().items()}
    image_ids, image_inputs = _batch(model, "image")
    image_logits = _logits(model, image_ids, image_inputs)

    written = init_from_image(model, ["video", "audio"])

    params = dict(model.named_parameters())
    for modality in ("video", "audio"):
        copied = {n for n in _own(model, modality) if n.startswith("projection.")}
        assert {f"projection.{n}" for n in written if re.search(rf"\.{modality}(\.|$)", n)} == copied
        assert len(copied) == 1 + 4 + 4 + 4 + 2  # tokens; in_proj, router, out_proj (w, b) x 2; start, end
        for name in copied:
            source = params[name.replace(f".{modality}", ".image")]
            assert torch.equal(params[name], source)
            assert params[name].data_ptr() != source.data_ptr()
    # Nothing else moved: the image, the experts, the tokenizers and position tables, CLIP, the LLM.
    unchanged = {n for n, t in model.state_dict().items() if torch.equal(t, before[n])}
    assert unchanged == set(before) - {f"projection.{n}" for n in written}
    assert torch.equal(_logits(model, image_ids, image_inputs), image_logits)

    # A new modality's CLIP features are projected exactly as an image's.
    audio = toy_inputs("audio", batch=2, seed=5)
    with torch.no_grad():
        features = model.encoder(audio, "audio")
        assert torch.equal(model.encode_modality(audio, "audio"), model.projection.embed_with_tags(features, "image"))

    # Independent copies: changing a copy leaves the image's tensor as it was.
    with torch.no_grad():
        params["projection.routers.audio.fc1.weight"].add_(1.0)
        params["projection.start_tags.video"].zero_()
    assert torch.equal(params["projection.routers.image.fc1.weight"], before["projection.routers.image.fc1.weight"])
    assert torch.equal(params["projection.start_tags.image"], before["projection.start_tags.image"])
    assert torch.equal(_logits(model, image_ids, image_inputs), image_logits)


@pytest.mark.parametrize(
    ("modalities", "message"),
    [
        (["audio", "sound"], r"\['sound'\] are not among the model's"),
        (["image"], r"other than 'image'"),
        (["audio", "audio"], r"distinct"),
    ],
)
def test_image_init_refuses_bad_modalities_by_name(pristine, modalities, message):
    with pytest.raises(ValueError, match=message):
        init_from_image(copy.deepcopy(pristine), modalities)


def test_image_init_needs_the_image():
    model = toy_onellm(modalities=("video", "audio"))
    with pytest.raises(ValueError, match=r"without 'image' to copy from"):
        init_from_image(model, ["audio"])


def test_every_modality_can_be_aligned(model):
    trainable = set(apply_policy(model, onellm_align_patterns(ONELLM_MODALITIES)))
    assert trainable == _names(model) - _clip(model) - _llm(model)
