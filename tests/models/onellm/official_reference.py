"""An independent, functional restatement of OneLLM's official forward, on release-named weights.

Written from the behaviour of the official code (csuhan/OneLLM @ 8587a47): `model/LLM/onellm.py`
(`Transformer.__init__`, `forward`, `encode_image`, `clip_encode_image`, `TransformerBlock`, `Attention`,
`apply_rotary_emb`, `Mlp`), `model/meta.py` (`MetaModel.forward`, the loss), `model/components.py`
(`RMSNorm`), `model/lib/point_utils.py` (`PointPatchEmbed`, `KNN`, `KNNGroup`) and pointnet2's
`furthest_point_sampling_kernel`, with open_clip's ViT-L/14 for `llma.clip.visual`. Naive on purpose:
plain tensor ops, Python loops for farthest point sampling and the experts, the router over every
token and then sliced, RoPE as complex rotations of interleaved pairs, greedy decoding by recomputing the
whole sequence. It imports nothing from `owl2`.

`release_state_dict` restates the key map of `owl2.models.upm` (owl2 names -> the release's),
`release_model_state_dict` extends it to the whole `OneLLMModel` (LLaMA in Meta's layout), and
`release_shapes` the shapes the official constructor gives, so that the map is checked as well.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

L = "llma."
PIXEL = ("image", "video", "rgbd", "rgbn")
OWN_TABLE = ("audio", "point", "fmri", "imu")  # `positional_embedding[modal]` in the release


# -- keys ---------------------------------------------------------------------------------------------------
_UPM = [
    (r"experts\.(\d+)\.layers\.(\d+)\.attn_norm\.weight", r"resample_layers.\1.\2.attention_norm.weight"),
    (r"experts\.(\d+)\.layers\.(\d+)\.attn\.([qkvo])_proj\.weight", r"resample_layers.\1.\2.attention.w\3.weight"),
    (r"experts\.(\d+)\.layers\.(\d+)\.mlp_norm\.weight", r"resample_layers.\1.\2.ffn_norm.weight"),
    (r"experts\.(\d+)\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"resample_layers.\1.\2.feed_forward.w1.weight"),
    (r"experts\.(\d+)\.layers\.(\d+)\.mlp\.up_proj\.weight", r"resample_layers.\1.\2.feed_forward.w3.weight"),
    (r"experts\.(\d+)\.layers\.(\d+)\.mlp\.down_proj\.weight", r"resample_layers.\1.\2.feed_forward.w2.weight"),
    (r"modality_tokens\.(\w+)", r"resample_tokens.\1"),
    (r"in_proj\.(\w+)\.linear\.(weight|bias)", r"clip_proj1.\1.0.\2"),
    (r"in_proj\.(\w+)\.norm\.(weight|bias)", r"clip_proj1.\1.1.\2"),
    (r"routers\.(\w+)\.(fc[12])\.(weight|bias)", r"routers.\1.\2.\3"),
    (r"out_proj\.(\w+)\.linear\.(weight|bias)", r"clip_proj2.\1.0.\2"),
    (r"out_proj\.(\w+)\.norm\.(weight|bias)", r"clip_proj2.\1.1.\2"),
    (r"start_tags\.(\w+)", r"start_tag.\1"),
    (r"end_tags\.(\w+)", r"end_tag.\1"),
]
_ENCODER = [
    (r"tokenizers\.point\.proj\.(weight|bias)", r"conv1.point.conv1.\1"),
    (r"tokenizers\.(audio|imu|fmri)\.proj\.(weight|bias)", r"conv1.\1.\2"),
    (r"pos_embeds\.(\w+)", r"positional_embedding.\1"),
    (r"clip\.patch_embed\.proj\.weight", r"clip.visual.conv1.weight"),
    (r"clip\.norm_pre\.(weight|bias)", r"clip.visual.ln_pre.\1"),
    (r"clip\.blocks\.(\d+)\.norm1\.(weight|bias)", r"clip.visual.transformer.resblocks.\1.ln_1.\2"),
    (r"clip\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"clip.visual.transformer.resblocks.\1.attn.in_proj_\2"),
    (r"clip\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"clip.visual.transformer.resblocks.\1.attn.out_proj.\2"),
    (r"clip\.blocks\.(\d+)\.norm2\.(weight|bias)", r"clip.visual.transformer.resblocks.\1.ln_2.\2"),
    (r"clip\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"clip.visual.transformer.resblocks.\1.mlp.c_fc.\2"),
    (r"clip\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"clip.visual.transformer.resblocks.\1.mlp.c_proj.\2"),
    (r"clip\.norm\.(weight|bias)", r"clip.visual.ln_post.\1"),
]


_LLM = [
    (r"language_model\.embed_tokens\.weight", r"tok_embeddings.weight"),
    (r"language_model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight", r"layers.\1.attention.w\2.weight"),
    (r"language_model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.attention_norm.weight"),
    (r"language_model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (r"language_model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"layers.\1.feed_forward.w1.weight"),
    (r"language_model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"layers.\1.feed_forward.w3.weight"),
    (r"language_model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"layers.\1.feed_forward.w2.weight"),
    (r"language_model\.norm\.weight", r"norm.weight"),
    (r"lm_head\.weight", r"output.weight"),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, target in rules:
        if re.fullmatch(pattern, key):
            return L + re.sub(pattern, target, key)
    raise KeyError(f"no release key for {key!r}")


def release_state_dict(encoder: dict[str, torch.Tensor], upm: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """owl2's `UniversalEncoder` and `UniversalProjection` state dicts under the release's names and shapes."""
    out = {_rename(key, _UPM): tensor for key, tensor in upm.items()}
    for key, tensor in encoder.items():
        if key == "clip.cls_token":
            out[L + "clip.visual.class_embedding"] = tensor.reshape(-1)
        elif key == "clip.pos_embed":
            out[L + "clip.visual.positional_embedding"] = tensor.squeeze(0)
        else:
            out[_rename(key, _ENCODER)] = tensor
    return out


def hf_to_meta_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """transformers' LLaMA q/k rows (per head: first halves, then second halves of the rotated pairs) -> Meta's
    interleaved pairs, the layout `apply_rotary_emb` rotates: the inverse of transformers' conversion `permute`."""
    out_features, in_features = weight.shape
    return weight.view(heads, 2, out_features // heads // 2, in_features).transpose(1, 2).reshape(weight.shape)


def release_model_state_dict(model: dict[str, torch.Tensor], d) -> dict[str, torch.Tensor]:
    """A whole `OneLLMModel` state dict under the release's names (`llma.*`), LLaMA's q and k in Meta's layout."""
    encoder = {k.removeprefix("encoder."): v for k, v in model.items() if k.startswith("encoder.")}
    upm = {k.removeprefix("projection."): v for k, v in model.items() if k.startswith("projection.")}
    out = release_state_dict(encoder, upm)
    for key, tensor in model.items():
        if key.startswith(("encoder.", "projection.")) or "rotary_emb" in key:
            continue
        name = _rename(key, _LLM)
        out[name] = hf_to_meta_rotary(tensor, d.llm_heads) if re.search(r"attention\.w[qk]\.", name) else tensor
    return out


def release_shapes(d, modalities, tokens: dict[str, int], grid: int, proj_dim: int = 16) -> dict[str, tuple]:
    """Every tensor shape the official `Transformer.__init__` creates outside the LLM, at dims `d` (a ToyDims).

    `tokens[m]` is the number of tokens modality m puts into CLIP; `proj_dim` is the width of open_clip's
    unused `visual.proj`. The release ties the UPM width to CLIP's (`resampler_params.dim = clip_width`) and
    the router's hidden width to 4x CLIP's; the experts' SwiGLU width is `d.expert_mlp` (the release derives
    2816 from LLaMA's rule, which at toy widths would round up to 256).
    """
    c, h, q, k, llm = d.clip_width, d.clip_width, d.modality_tokens, d.experts, d.llm_width
    r = 4 * c  # `Mlp(clip_width, clip_width * 4, num_experts)`
    s = {}
    for e in range(k):
        for i in range(d.expert_layers):
            p = f"{L}resample_layers.{e}.{i}."
            s.update({p + f"attention.w{w}.weight": (h, h) for w in "qkvo"})
            s[p + "feed_forward.w1.weight"] = s[p + "feed_forward.w3.weight"] = (d.expert_mlp, h)
            s[p + "feed_forward.w2.weight"] = (h, d.expert_mlp)
            s[p + "attention_norm.weight"] = s[p + "ffn_norm.weight"] = (h,)
    for m in modalities:
        s[f"{L}resample_tokens.{m}"] = (1, q, h)
        s.update({f"{L}clip_proj1.{m}.0.weight": (h, c), f"{L}clip_proj1.{m}.0.bias": (h,)})
        s.update({f"{L}clip_proj1.{m}.1.weight": (h,), f"{L}clip_proj1.{m}.1.bias": (h,)})
        s.update({f"{L}routers.{m}.fc1.weight": (r, c), f"{L}routers.{m}.fc1.bias": (r,)})
        s.update({f"{L}routers.{m}.fc2.weight": (k, r), f"{L}routers.{m}.fc2.bias": (k,)})
        s.update({f"{L}clip_proj2.{m}.0.weight": (llm, h), f"{L}clip_proj2.{m}.0.bias": (llm,)})
        s.update({f"{L}clip_proj2.{m}.1.weight": (llm,), f"{L}clip_proj2.{m}.1.bias": (llm,)})
        s[f"{L}start_tag.{m}"] = s[f"{L}end_tag.{m}"] = (1, 1, llm)
        if m in OWN_TABLE:
            s[f"{L}positional_embedding.{m}"] = (tokens[m] + 1, c)
    if "audio" in modalities:
        s.update({f"{L}conv1.audio.weight": (c, 1, d.audio_patch, d.audio_patch), f"{L}conv1.audio.bias": (c,)})
    if "point" in modalities:
        s.update({f"{L}conv1.point.conv1.weight": (c, 6, 1, 1), f"{L}conv1.point.conv1.bias": (c,)})
    if "imu" in modalities:
        s[f"{L}conv1.imu.weight"] = (c, d.imu_channels, d.imu_kernel)  # bias=False
    if "fmri" in modalities:
        s.update({f"{L}conv1.fmri.weight": (d.fmri_tokens * c, d.voxels), f"{L}conv1.fmri.bias": (d.fmri_tokens * c,)})
    v = f"{L}clip.visual."
    s.update({v + "class_embedding": (c,), v + "positional_embedding": (grid * grid + 1, c), v + "proj": (c, proj_dim)})
    s[v + "conv1.weight"] = (c, 3, d.patch_size, d.patch_size)  # open_clip: no bias
    for norm in ("ln_pre", "ln_post"):
        s[v + norm + ".weight"] = s[v + norm + ".bias"] = (c,)
    for i in range(d.clip_layers):
        p = f"{v}transformer.resblocks.{i}."
        for norm in ("ln_1", "ln_2"):
            s[p + norm + ".weight"] = s[p + norm + ".bias"] = (c,)
        s.update({p + "attn.in_proj_weight": (3 * c, c), p + "attn.in_proj_bias": (3 * c,)})
        s.update({p + "attn.out_proj.weight": (c, c), p + "attn.out_proj.bias": (c,)})
        s.update({p + "mlp.c_fc.weight": (d.clip_mlp, c), p + "mlp.c_fc.bias": (d.clip_mlp,)})
        s.update({p + "mlp.c_proj.weight": (c, d.clip_mlp), p + "mlp.c_proj.bias": (c,)})
    return s


# -- layers -------------------------------------------------------------------------------------------------
def layer_norm(x, sd, key, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[key + ".weight"] + sd[key + ".bias"]


def rms_norm(x, weight, eps):  # model/components.py: computed in float32, cast back, then scaled
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def attention(q, k, v, heads):
    """Unmasked multi-head attention (flash_attn_func with causal=False; nn.MultiheadAttention without mask)."""
    b, n, width = q.shape
    q, k, v = (t.reshape(b, -1, heads, width // heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, L, hd)
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, width)


def gelu(x):  # nn.GELU(), the exact (erf) form
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def quick_gelu(x):  # open_clip's QuickGELU, used by the OpenAI weights
    return x * torch.sigmoid(1.702 * x)


# -- CLIP (open_clip VisionTransformer as `clip_encode_image` drives it) -------------------------------------
def clip_encode_image(sd, x, modal, d):
    """`clip_encode_image`: x `[*, width, grid ** 2]` (or `[*, width, h, w]`) -> `[*, 1 + tokens, width]`."""
    v = L + "clip.visual."
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, L, C)
    cls = sd[v + "class_embedding"] + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1)
    pos = sd[L + f"positional_embedding.{modal}"] if modal in OWN_TABLE else sd[v + "positional_embedding"]
    x = layer_norm(x + pos, sd, v + "ln_pre", d.clip_eps)
    for i in range(d.clip_layers):
        p = f"{v}transformer.resblocks.{i}."
        h = layer_norm(x, sd, p + "ln_1", d.clip_eps)
        qkv = h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
        a = attention(*qkv.chunk(3, dim=-1), heads=d.clip_heads)
        x = x + a @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = layer_norm(x, sd, p + "ln_2", d.clip_eps)
        h = quick_gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return layer_norm(x, sd, v + "ln_post", d.clip_eps)  # every token, CLS included; visual.proj unused


# -- point tokenizer ---------------------------------------------------------------------------------------
def reference_fps(points: torch.Tensor, count: int) -> list[int]:
    """pointnet2's kernel for one cloud `(P, 3)`, written as a plain loop over the points (float64 arithmetic)."""
    pts = points.tolist()
    nearest = [1e10] * len(pts)
    chosen = [0]  # the kernel starts from point 0
    for _ in range(1, count):
        last = pts[chosen[-1]]
        best, best_index = -1.0, 0
        for index, pt in enumerate(pts):
            d = (pt[0] - last[0]) ** 2 + (pt[1] - last[1]) ** 2 + (pt[2] - last[2]) ** 2
            nearest[index] = min(d, nearest[index])
            if nearest[index] > best:
                best, best_index = nearest[index], index
        chosen.append(best_index)
    return chosen


def point_patch_embed(sd, x, d, columns=slice(3, 6)):
    """`PointPatchEmbed.forward`: `[B, P, 6]` -> `[B, C, G, 1]`; the release samples on columns 3: (`x[:, :, 3:]`)."""
    weight, bias = sd[L + "conv1.point.conv1.weight"], sd[L + "conv1.point.conv1.bias"]
    out = []
    for cloud in x:  # (P, 6)
        p = cloud[:, columns]
        centres = p[reference_fps(p, d.point_groups)]  # (G, 3)
        squared = ((p[:, None, :] - centres[None, :, :]) ** 2).sum(-1)  # (P, G)
        neighbours = squared.argsort(dim=0)[: d.point_neighbours].T  # (G, k): KNN over the support points
        grouped = cloud[neighbours].permute(2, 0, 1)  # (6, G, k): raw features; the relative xyz is discarded
        conv = torch.einsum("cf,fgk->cgk", weight[:, :, 0, 0], grouped) + bias[:, None, None]
        out.append(conv.max(dim=-1, keepdim=True).values)  # (C, G, 1)
    return torch.stack(out)


# -- the UPM ---------------------------------------------------------------------------------------------------
def transformer_block(sd, x, p, d):
    """`TransformerBlock.forward(x, 0, freqs_cis=None, mask=None)`: no RoPE, non-causal."""
    h = rms_norm(x, sd[p + "attention_norm.weight"], d.rms_eps)
    q, k, v = (h @ sd[p + f"attention.w{w}.weight"].T for w in "qkv")
    h = x + attention(q, k, v, d.expert_heads) @ sd[p + "attention.wo.weight"].T
    f = rms_norm(h, sd[p + "ffn_norm.weight"], d.rms_eps)
    gated = F.silu(f @ sd[p + "feed_forward.w1.weight"].T) * (f @ sd[p + "feed_forward.w3.weight"].T)
    return h + gated @ sd[p + "feed_forward.w2.weight"].T


def router_weights(sd, feats, modal, activation="sigmoid"):
    """The router over EVERY token of `[tokens; proj1(x)]`, as the release computes it: `[B, L, K]`."""
    r = f"{L}routers.{modal}."
    logits = gelu(feats @ sd[r + "fc1.weight"].T + sd[r + "fc1.bias"]) @ sd[r + "fc2.weight"].T + sd[r + "fc2.bias"]
    if activation == "softmax":  # the paper's Eq. 2
        return logits.softmax(-1)
    w = logits.sigmoid()
    return w / w.sum(dim=-1, keepdim=True)


def encode_features(sd, x, modal, d, point_columns=slice(3, 6)):
    """The first half of `Transformer.encode_image`: tokenizer (or CLIP's conv1), CLIP, mean over frames."""
    bsz, frames = x.shape[0], 1
    if modal == "image":
        x = F.conv2d(x, sd[L + "clip.visual.conv1.weight"], stride=d.patch_size)
    elif modal == "audio":
        x = F.conv2d(x, sd[L + "conv1.audio.weight"], sd[L + "conv1.audio.bias"], stride=d.audio_stride)
    elif modal == "imu":
        x = F.conv1d(x, sd[L + "conv1.imu.weight"])
    elif modal == "point":
        x = point_patch_embed(sd, x.float(), d, point_columns)
    elif modal in ("video", "rgbd", "rgbn"):
        bsz, frames = x.shape[:2]
        x = F.conv2d(x.reshape(bsz * frames, *x.shape[2:]), sd[L + "clip.visual.conv1.weight"], stride=d.patch_size)
    elif modal == "fmri":
        x = x @ sd[L + "conv1.fmri.weight"].T + sd[L + "conv1.fmri.bias"]  # [B, 1, T * C]
        x = x.reshape(x.shape[0], d.clip_width, -1)  # [B, C, T]
    feats = clip_encode_image(sd, x, modal, d)
    return feats.reshape(bsz, frames, *feats.shape[1:]).mean(dim=1)  # mean over frames, after CLIP


def project(sd, feats, modal, d, activation="sigmoid", return_router=False):
    """The second half of `encode_image`, the UPM: `[B, L, C]` -> `[B, Q, llm]` (and the `[B, Q + L, K]` routing)."""
    bsz = feats.shape[0]
    feats = layer_norm(feats @ sd[f"{L}clip_proj1.{modal}.0.weight"].T + sd[f"{L}clip_proj1.{modal}.0.bias"],
                       sd, f"{L}clip_proj1.{modal}.1", d.layer_norm_eps)  # fmt: skip
    tokens = sd[f"{L}resample_tokens.{modal}"]
    feats = torch.cat([tokens.repeat(bsz, 1, 1), feats], dim=1)
    routing = router_weights(sd, feats, modal, activation)
    q = tokens.shape[1]
    experts = []
    for e in range(d.experts):
        h = feats
        for i in range(d.expert_layers):
            h = transformer_block(sd, h, f"{L}resample_layers.{e}.{i}.", d)
        experts.append(h[:, :q] * routing[:, :q, e][:, :, None])
    out = sum(experts)
    out = layer_norm(out @ sd[f"{L}clip_proj2.{modal}.0.weight"].T + sd[f"{L}clip_proj2.{modal}.0.bias"],
                     sd, f"{L}clip_proj2.{modal}.1", d.layer_norm_eps)  # fmt: skip
    return (out, routing) if return_router else out


def with_tags(sd, tokens, modal):
    """What `Transformer.forward` inserts after BOS: `[start_tag; tokens; end_tag]`, `[B, Q + 2, llm]`."""
    b = tokens.shape[0]
    start, end = sd[f"{L}start_tag.{modal}"].expand(b, -1, -1), sd[f"{L}end_tag.{modal}"].expand(b, -1, -1)
    return torch.cat([start, tokens, end], dim=1)


# -- LLaMA-2 and the whole model (Transformer.forward, MetaModel.forward) --------------------------------------
def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0) -> torch.Tensor:
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    return torch.polar(torch.ones(end, dim // 2), torch.outer(torch.arange(end).float(), freqs))  # complex64


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """`[B, L, H, hd]` rotated as complex numbers over interleaved pairs `(2i, 2i + 1)`."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs_cis[None, :, None, :]).flatten(3).type_as(x)


def causal_attention(q, k, v):
    """`flash_attn_func(q, k, v, causal=True)` on `[B, L, H, hd]`, written out."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, hd)
    length = q.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores + torch.full((length, length), float("-inf")).triu(1)
    return (scores.softmax(-1) @ v).transpose(1, 2)  # (B, L, H, hd)


def llama(sd, h, d):
    """The LLM's blocks and final norm over embeddings `h` `[B, L, D]`, positions 0..L-1, causal (`mask` set)."""
    b, length, width = h.shape
    head_dim = width // d.llm_heads
    freqs = precompute_freqs_cis(head_dim, length)
    for i in range(d.llm_layers):
        p = f"{L}layers.{i}."
        x = rms_norm(h, sd[p + "attention_norm.weight"], d.rms_eps)
        q, k, v = (x @ sd[p + f"attention.w{w}.weight"].T for w in "qkv")
        q, k, v = (t.view(b, length, d.llm_heads, head_dim) for t in (q, k, v))
        out = causal_attention(apply_rotary_emb(q, freqs), apply_rotary_emb(k, freqs), v)
        h = h + out.reshape(b, length, width) @ sd[p + "attention.wo.weight"].T
        f = rms_norm(h, sd[p + "ffn_norm.weight"], d.rms_eps)
        h = h + (F.silu(f @ sd[p + "feed_forward.w1.weight"].T) * (f @ sd[p + "feed_forward.w3.weight"].T)) \
            @ sd[p + "feed_forward.w2.weight"].T  # fmt: skip
    return rms_norm(h, sd[L + "norm.weight"], d.rms_eps)


def forward(sd, examples, image, modal, d, point_columns=slice(3, 6)):
    """`Transformer.forward(examples, image, modal)`: `[BOS] + start + Q tokens + end + text` -> logits of
    `h[:, prefix_len:]`, one per position of `examples` (the end tag's first: it predicts the first text token)."""
    h = sd[L + "tok_embeddings.weight"][examples]
    prefix_len = 0
    if image is not None:
        tokens = project(sd, encode_features(sd, image, modal, d, point_columns), modal, d)
        block = with_tags(sd, tokens, modal)  # [start; tokens; end]
        h = torch.cat([h[:, :1], block, h[:, 1:]], dim=1)
        prefix_len = tokens.shape[1] + 1 + 1
    return llama(sd, h, d)[:, prefix_len:] @ sd[L + "output.weight"].T


def loss(output, labels, vocab_size):
    """`MetaModel.forward`: shift, cross-entropy with `ignore_index=0` (the pad id); 0 when nothing is supervised."""
    output, labels = output[:, :-1], labels[:, 1:]
    if labels.sum() == 0:
        return output.mean() * 0
    return F.cross_entropy(output.reshape(-1, vocab_size), labels.flatten(), ignore_index=0)


def greedy(sd, examples, image, modal, d, steps, point_columns=slice(3, 6)):
    """Greedy tokens by recomputing the whole sequence each step (the release's cached decoding, without
    `forward_inference`'s two-position cache offset)."""
    tokens = examples
    for _ in range(steps):
        next_token = forward(sd, tokens, image, modal, d, point_columns)[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
    return tokens[:, examples.shape[1]:]
