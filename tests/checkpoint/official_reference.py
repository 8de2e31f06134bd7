"""An independent, functional oracle of the official mPLUG-Owl2 forward pass, on an official state dict.

Written from the semantics of the official code (`visual_encoder.py`, `modeling_mplug_owl2.py`,
`modeling_llama2.py`), deliberately naive: plain matmuls, a Python loop for the per-sample splice,
per-token modality selection. It shares nothing with `owl2.models` or `owl2.checkpoint`, so agreement
means the converter and the model reproduce the official computation. Also builds official-format
configs and state dicts for tests (`official_config`, `random_official_state_dict`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_TOKEN = -200
IGNORE = -100
V = "model.vision_model."
A = "model.visual_abstractor."


# -- building official checkpoints --------------------------------------------------------------------
def official_config(
    vision_width=64, vision_layers=2, vision_heads=4, image_size=56, patch_size=14,
    queries=8, abstractor_layers=2, abstractor_heads=4, abstractor_ffn=176,
    vocab=512, width=128, ffn=344, layers=4, heads=4, kv_heads=2,
) -> dict:  # fmt: skip
    """An official config.json dict (LLaMA fields at top level + `visual_config`), toy dims by default."""
    return {
        "architectures": ["MPLUGOwl2LlamaForCausalLM"],
        "model_type": "mplug_owl2",
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "visual_config": {
            "visual_model": {
                "hidden_size": vision_width, "intermediate_size": 4 * vision_width, "num_hidden_layers": vision_layers,
                "num_attention_heads": vision_heads, "image_size": image_size, "patch_size": patch_size,
                "num_channels": 3, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-6,
            },
            "visual_abstractor": {
                "num_learnable_queries": queries, "hidden_size": vision_width, "num_hidden_layers": abstractor_layers,
                "num_attention_heads": abstractor_heads, "intermediate_size": abstractor_ffn, "layer_norm_eps": 1e-6,
                "encoder_hidden_size": vision_width, "grid_size": image_size // patch_size,
            },
        },
    }  # fmt: skip


def _sincos_1d(dim, pos):  # MAE's numpy recipe, float32 like the official buffers
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def official_buffers(width: int, queries: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`q_pos_embed`, `k_pos_embed` as the official abstractor registers them (class-token row of zeros)."""
    q = _sincos_1d(width, np.arange(queries, dtype=np.float32))
    g = np.arange(grid, dtype=np.float32)
    mesh = np.stack(np.meshgrid(g, g), axis=0).reshape(2, 1, grid, grid)  # w first, as in MAE
    k = np.concatenate([_sincos_1d(width // 2, mesh[0]), _sincos_1d(width // 2, mesh[1])], axis=1)
    k = np.concatenate([np.zeros([1, width]), k], axis=0)
    return torch.from_numpy(q).float(), torch.from_numpy(k).float()


def random_official_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the official model for `config`, random (norm gains near 1), buffers computed."""
    g = torch.Generator().manual_seed(seed)
    vis, abs_ = config["visual_config"]["visual_model"], config["visual_config"]["visual_abstractor"]
    D, F_, P = vis["hidden_size"], vis["intermediate_size"], vis["patch_size"]
    tokens = (vis["image_size"] // P) ** 2 + 1
    H, I, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * (H // config["num_attention_heads"])
    AF, Q = abs_["intermediate_size"], abs_["num_learnable_queries"]

    def w(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    def gain(n):
        return 1 + w(n, std=0.1)

    sd = {
        "model.embed_tokens.weight": w(vocab, H, std=0.5),
        "model.norm.weight": gain(H),
        "lm_head.weight": w(vocab, H, std=0.2),
        V + "embeddings.cls_token": w(1, 1, D, std=0.5),
        V + "embeddings.patch_embed.weight": w(D, 3, P, P),
        V + "embeddings.position_embedding": w(1, tokens, D, std=0.2),
        V + "embeddings.pre_layernorm.weight": gain(D),
        V + "embeddings.pre_layernorm.bias": w(D),
        V + "post_layernorm.weight": gain(D),
        V + "post_layernorm.bias": w(D),
        A + "query_embeds": w(1, Q, D, std=1.0),
        A + "visual_fc.weight": w(H, D, std=0.2),
        A + "visual_fc.bias": w(H),
        A + "vit_eos": w(1, 1, H, std=1.0),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = w(H, H, std=0.1)
        sd[p + "self_attn.o_proj.weight"] = w(H, H, std=0.1)
        for m in (0, 1):
            sd[p + f"self_attn.k_proj.multiway.{m}.weight"] = w(kv, H, std=0.1)
            sd[p + f"self_attn.v_proj.multiway.{m}.weight"] = w(kv, H, std=0.1)
            sd[p + f"input_layernorm.multiway.{m}.weight"] = gain(H)
            sd[p + f"post_attention_layernorm.multiway.{m}.weight"] = gain(H)
        sd[p + "mlp.gate_proj.weight"] = w(I, H, std=0.1)
        sd[p + "mlp.up_proj.weight"] = w(I, H, std=0.1)
        sd[p + "mlp.down_proj.weight"] = w(H, I, std=0.1)
        sd[p + "self_attn.rotary_emb.inv_freq"] = torch.ones(H // config["num_attention_heads"] // 2)  # stale
    for i in range(vis["num_hidden_layers"]):
        p = V + f"encoder.layers.{i}."
        for name, shape in [("self_attn.query_key_value", (3 * D, D)), ("self_attn.dense", (D, D)),
                            ("mlp.fc1", (F_, D)), ("mlp.fc2", (D, F_))]:  # fmt: skip
            sd[p + name + ".weight"], sd[p + name + ".bias"] = w(*shape, std=0.1), w(shape[0])
        for name in ("input_layernorm", "post_attention_layernorm"):
            sd[p + name + ".weight"], sd[p + name + ".bias"] = gain(D), w(D)
    q_pos, k_pos = official_buffers(D, Q, abs_["grid_size"])
    for i in range(abs_["num_hidden_layers"]):
        p = A + f"encoder.layers.{i}.crossattention."
        for name, shape in [("attention.query", (D, D)), ("attention.key", (D, D)), ("attention.value", (D, D)),
                            ("output.out_proj", (D, D)), ("output.mlp.w1", (AF, D)), ("output.mlp.w3", (AF, D)),
                            ("output.mlp.w2", (D, AF))]:  # fmt: skip
            sd[p + name + ".weight"], sd[p + name + ".bias"] = w(*shape, std=0.1), w(shape[0])
        for name, n in [("norm1", D), ("normk", D), ("output.norm2", D), ("output.mlp.ffn_ln", AF)]:
            sd[p + name + ".weight"], sd[p + name + ".bias"] = gain(n), w(n)
        sd[p + "attention.q_pos_embed"], sd[p + "attention.k_pos_embed"] = q_pos.clone(), k_pos.clone()
    return sd


# -- the forward pass ---------------------------------------------------------------------------------
def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps)


def _lin(x, sd, name):
    return x @ sd[name + ".weight"].T + (sd[name + ".bias"] if name + ".bias" in sd else 0)


def vision_forward(sd: dict, config: dict, images: torch.Tensor) -> torch.Tensor:
    """`MplugOwlVisionModel(...).last_hidden_state`: every token after the post-LayerNorm."""
    vis = config["visual_config"]["visual_model"]
    eps, heads = vis["layer_norm_eps"], vis["num_attention_heads"]
    x = F.conv2d(images, sd[V + "embeddings.patch_embed.weight"], stride=vis["patch_size"]).flatten(2).transpose(1, 2)
    n, _, d = x.shape
    x = torch.cat([sd[V + "embeddings.cls_token"].expand(n, 1, d), x], dim=1)
    x = x + sd[V + "embeddings.position_embedding"][:, : x.shape[1]]
    x = _ln(x, sd, V + "embeddings.pre_layernorm", eps)
    for i in range(vis["num_hidden_layers"]):
        p = V + f"encoder.layers.{i}."
        h = _ln(x, sd, p + "input_layernorm", eps)
        qkv = _lin(h, sd, p + "self_attn.query_key_value")
        qkv = qkv.reshape(n, -1, heads, 3, d // heads).permute(3, 0, 2, 1, 4)  # per-head grouped rows
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, dim=-1) @ v
        x = x + _lin(attn.permute(0, 2, 1, 3).reshape(n, -1, d), sd, p + "self_attn.dense")
        h = _lin(_ln(x, sd, p + "post_attention_layernorm", eps), sd, p + "mlp.fc1")
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu
        x = x + _lin(h, sd, p + "mlp.fc2")
    return _ln(x, sd, V + "post_layernorm", eps)


def abstractor_forward(sd: dict, config: dict, image_tokens: torch.Tensor) -> torch.Tensor:
    """`MplugOwlVisualAbstractorModel(encoder_hidden_states=...).last_hidden_state`: queries + vit_eos."""
    cfg = config["visual_config"]["visual_abstractor"]
    n, heads = image_tokens.shape[0], cfg["num_attention_heads"]
    x = sd[A + "query_embeds"].repeat(n, 1, 1)
    for i in range(cfg["num_hidden_layers"]):
        p = A + f"encoder.layers.{i}.crossattention."
        q_in = _ln(x, sd, p + "norm1", 1e-5)  # nn.LayerNorm default eps
        kv = torch.cat([q_in, _ln(image_tokens, sd, p + "normk", 1e-5)], dim=1)
        q_pos, k_pos = sd[p + "attention.q_pos_embed"], sd[p + "attention.k_pos_embed"]
        key = _lin(kv + torch.cat([q_pos, k_pos])[None], sd, p + "attention.key")
        value = _lin(kv, sd, p + "attention.value")
        query = _lin(q_in + q_pos[None], sd, p + "attention.query")

        def split(t):
            return t.view(n, t.shape[1], heads, -1).permute(0, 2, 1, 3)

        q, k, v = split(query), split(key), split(value)
        ctx = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        ctx = ctx.permute(0, 2, 1, 3).reshape(n, -1, q_in.shape[-1])
        h = q_in + _lin(ctx, sd, p + "output.out_proj")
        m = _ln(h, sd, p + "output.norm2", 1e-5)
        m = F.silu(_lin(m, sd, p + "output.mlp.w1")) * _lin(m, sd, p + "output.mlp.w3")
        m = _lin(_ln(m, sd, p + "output.mlp.ffn_ln", cfg["layer_norm_eps"]), sd, p + "output.mlp.w2")
        x = h + m
    out = _lin(x, sd, A + "visual_fc")
    return torch.cat([out, sd[A + "vit_eos"].repeat(n, 1, 1)], dim=1)


def splice(sd, input_ids, attention_mask, labels, image_features):
    """The official per-sample splice, right padding: (embeds, modality, mask, labels) of the expanded batch."""
    embed = sd["model.embed_tokens.weight"]
    rows, image_index = [], 0
    for b in range(input_ids.shape[0]):
        e, m, a, lab = [], [], [], []
        for t, token in enumerate(input_ids[b].tolist()):
            if token == IMAGE_TOKEN:
                feats = image_features[image_index]
                image_index += 1
                e.append(feats)
                m += [1] * len(feats)
                a += [1] * len(feats)
                lab += [IGNORE] * len(feats)
            else:
                e.append(embed[token][None])
                m.append(0)
                a.append(int(attention_mask[b, t]))
                lab.append(int(labels[b, t]) if labels is not None else IGNORE)
        rows.append((torch.cat(e), m, a, lab))
    length = max(len(r[1]) for r in rows)
    embeds = torch.stack([torch.cat([r[0], r[0].new_zeros(length - len(r[1]), r[0].shape[1])]) for r in rows])
    pad = [length - len(r[1]) for r in rows]
    modality = torch.tensor([r[1] + [0] * k for r, k in zip(rows, pad)])
    mask = torch.tensor([r[2] + [0] * k for r, k in zip(rows, pad)])
    new_labels = torch.tensor([r[3] + [IGNORE] * k for r, k in zip(rows, pad)])
    return embeds, modality, mask, new_labels


def _rms(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _multiway(x, modality, fn):
    """Apply fn(x, branch) per token according to its modality (0 text, 1 image)."""
    return torch.where(modality[..., None] == 1, fn(x, 1), fn(x, 0))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def decoder_forward(sd, config, embeds, modality, mask) -> torch.Tensor:
    """The multiway LLaMA-2 (positions 0..T-1, causal + padding mask) -> logits `(B, T, vocab)`."""
    b, t, width = embeds.shape
    heads, kv_heads, eps = config["num_attention_heads"], config["num_key_value_heads"], config["rms_norm_eps"]
    hd = width // heads
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    angles = torch.arange(t).float()[:, None] * inv_freq[None]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()  # (T, hd)
    allowed = torch.ones(t, t).tril().bool()[None] & mask.bool()[:, None, :]  # (B, T, T)
    bias = torch.zeros(b, 1, t, t).masked_fill(~allowed[:, None], torch.finfo(embeds.dtype).min)
    x = embeds
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _multiway(x, modality, lambda y, m: _rms(y, sd[p + f"input_layernorm.multiway.{m}.weight"], eps))
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).view(b, t, heads, hd).transpose(1, 2)
        k = _multiway(h, modality, lambda y, m: y @ sd[p + f"self_attn.k_proj.multiway.{m}.weight"].T)
        v = _multiway(h, modality, lambda y, m: y @ sd[p + f"self_attn.v_proj.multiway.{m}.weight"].T)
        k = k.view(b, t, kv_heads, hd).transpose(1, 2)
        v = v.view(b, t, kv_heads, hd).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1, dtype=torch.float32) @ v
        x = x + attn.transpose(1, 2).reshape(b, t, width) @ sd[p + "self_attn.o_proj.weight"].T
        h = _multiway(x, modality, lambda y, m: _rms(y, sd[p + f"post_attention_layernorm.multiway.{m}.weight"], eps))
        gate, up = h @ sd[p + "mlp.gate_proj.weight"].T, h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    x = _rms(x, sd["model.norm.weight"], eps)
    return x @ sd["lm_head.weight"].T


def forward(sd, config, input_ids, images=None, attention_mask=None, labels=None):
    """Official `MPLUGOwl2LlamaForCausalLM.forward`: (logits, loss, expanded attention mask)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    features = abstractor_forward(sd, config, vision_forward(sd, config, images)) if images is not None else []
    embeds, modality, mask, new_labels = splice(sd, input_ids, attention_mask, labels, features)
    logits = decoder_forward(sd, config, embeds, modality, mask)
    loss = None
    if labels is not None:
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), new_labels[:, 1:].reshape(-1), ignore_index=IGNORE
        )
    return logits, loss, mask


def greedy(sd, config, input_ids, images, steps: int) -> list[int]:
    """Greedy decoding of one row without a cache (new tokens are text); returns the new token ids."""
    ids = input_ids.clone()
    new = []
    for _ in range(steps):
        logits, _, _ = forward(sd, config, ids, images)
        token = int(logits[0, -1].argmax())
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return new
