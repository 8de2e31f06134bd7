"""Stage policies (frozen sets) and AdamW groups (no-decay set, ViT layer decay, multipliers), no launcher."""

from __future__ import annotations

import pytest

from owl2.train.config import OptimConfig
from owl2.train.optim import param_groups, vit_layer_id
from owl2.train.policy import STAGES, apply_policy
from tests.conftest import toy_model


def _group_of(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in groups for p in g["params"]}


def test_pretrain_trains_vision_side_only():
    model = toy_model()
    trainable = set(apply_policy(model, STAGES["pretrain"]))
    for name, _ in model.named_parameters():
        vision_side = name.startswith(("vision_model.", "abstractor.")) or ".image." in name
        assert (name in trainable) == vision_side, name
    assert "language_model.layers.0.self_attn.k_proj.image.weight" in trainable
    assert "language_model.layers.0.input_layernorm.image.weight" in trainable
    assert "language_model.layers.0.self_attn.q_proj.weight" not in trainable


def test_instruct_trains_everything():
    model = toy_model()
    assert len(apply_policy(model, STAGES["instruct"])) == len(list(model.parameters()))


def test_unmatched_pattern_is_an_error():
    with pytest.raises(ValueError, match="abstracter"):
        apply_policy(toy_model(), ["abstracter.*"])


def test_layer_decay_and_no_decay():
    model = toy_model()
    apply_policy(model, STAGES["instruct"])
    depth = model.config.vision_config.num_hidden_layers  # 2
    optim = OptimConfig(lr=1.0, weight_decay=0.1, layer_decay=0.5, lr_multipliers={"abstractor.*": 3.0})
    by_name = _group_of(model, param_groups(model, optim, depth))
    assert len(by_name) == len(list(model.parameters()))
    expected_lr = {
        "vision_model.pos_embed": 0.5**3,
        "vision_model.patch_embed.proj.weight": 0.5**3,
        "vision_model.blocks.0.attn.qkv.weight": 0.5**2,
        "vision_model.blocks.1.attn.qkv.weight": 0.5,
        "vision_model.norm.weight": 1.0,
        "abstractor.layers.0.attn.q_proj.weight": 3.0,
        "language_model.layers.0.mlp.up_proj.weight": 1.0,
    }
    for name, lr in expected_lr.items():
        assert by_name[name]["lr"] == pytest.approx(lr), name
    no_decay = ["vision_model.cls_token", "vision_model.pos_embed", "abstractor.query_embeds", "abstractor.eos_embed",
                "language_model.embed_tokens.weight", "language_model.norm.weight", "vision_model.blocks.0.attn.qkv.bias",
                "language_model.layers.0.input_layernorm.image.weight"]
    decay = ["vision_model.blocks.0.mlp.fc1.weight", "abstractor.proj.weight", "lm_head.weight",
             "language_model.layers.0.self_attn.k_proj.image.weight"]
    assert all(by_name[n]["weight_decay"] == 0.0 for n in no_decay)
    assert all(by_name[n]["weight_decay"] == 0.1 for n in decay)
    assert vit_layer_id("abstractor.proj.weight", depth) is None


def test_frozen_parameters_have_no_group():
    model = toy_model()
    trainable = apply_policy(model, STAGES["pretrain"])
    by_name = _group_of(model, param_groups(model, OptimConfig(), model.config.vision_config.num_hidden_layers))
    assert sorted(by_name) == sorted(trainable)
