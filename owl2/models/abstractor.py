"""The visual abstractor (paper section 3.1; official `visual_encoder.py`, `MplugOwlVisualAbstractorModel`).

A fixed set of learnable queries reads the ViT tokens through a stack of layers, compressing any
image to `num_queries` vectors; a linear map takes them to the LLM width and a learned end-of-image
embedding is appended. One layer, exactly as the released model computes it:

    q = LN_q(queries)                        x = LN_x(image tokens)
    kv = [q; x]                               (keys and values see the queries and the image)
    a = Attention(query=q + P_q, key=kv + [P_q; P_x], value=kv)
    h = q + W_o a                             (the residual starts from the *normed* queries)
    out = h + SwiGLU(LN_h(h))                 (SwiGLU with a LayerNorm on its inner activations)

P_q is a 1-D sin-cos table over the query index, P_x a 2-D sin-cos table over the patch grid with a
zero row for the class token. The tables are computed, never learned or stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from owl2.config import Owl2AbstractorConfig


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """MAE's 1-D sin-cos table: `(M,)` positions -> `(M, dim)`, sines in the first half, cosines in the second."""
    if dim % 2:
        raise ValueError(f"sin-cos position tables need an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float32, device=positions.device) / (dim / 2)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = positions.float()[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_size: int, device: torch.device | None = None) -> torch.Tensor:
    """MAE's 2-D sin-cos table for a square patch grid, with a leading zero row for the class token.

    Returns `(1 + grid_size**2, dim)`; patches in row-major order. As in MAE (and the official code),
    the first half of the channels encodes the column and the second half the row.
    """
    coords = torch.arange(grid_size, dtype=torch.float32, device=device)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (g, g) each
    table = torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1)
    return torch.cat([table.new_zeros(1, dim), table])


class AbstractorAttention(nn.Module):
    """Multi-head attention of the queries over [queries; image tokens] (official `attention.{query,key,value}`)."""

    def __init__(self, config: Owl2AbstractorConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """`query (N, Q, D)`, `key`/`value (N, Q + S, D)` -> `(N, Q, D)`, after the output projection."""
        n, q_len, width = query.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(n, -1, self.num_heads, self.head_dim).transpose(1, 2)  # (N, nh, L, hd)

        out = F.scaled_dot_product_attention(heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value)))
        return self.o_proj(out.transpose(1, 2).reshape(n, q_len, width))


class AbstractorMLP(nn.Module):
    """SwiGLU with a LayerNorm on the inner activations (official `mlp.{w1,w3,ffn_ln,w2}`)."""

    def __init__(self, config: Owl2AbstractorConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size)  # official w1
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)  # official w3
        self.inner_norm = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps)  # official ffn_ln
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)  # official w2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.inner_norm(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class AbstractorLayer(GradientCheckpointingLayer):
    """One abstractor layer; see the module docstring for the computation."""

    def __init__(self, config: Owl2AbstractorConfig):
        super().__init__()
        self.query_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)  # official norm1
        self.image_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)  # official normk
        self.attn = AbstractorAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)  # official norm2
        self.mlp = AbstractorMLP(config)

    def forward(
        self, queries: torch.Tensor, image_tokens: torch.Tensor, query_pos: torch.Tensor, image_pos: torch.Tensor
    ) -> torch.Tensor:
        queries = self.query_norm(queries)
        kv = torch.cat([queries, self.image_norm(image_tokens)], dim=1)  # (N, Q + S, D)
        key_pos = torch.cat([query_pos, image_pos], dim=0)  # (Q + S, D)
        hidden = queries + self.attn(queries + query_pos, kv + key_pos, kv)
        return hidden + self.mlp(self.mlp_norm(hidden))


class VisualAbstractor(nn.Module):
    """ViT tokens `(N, 1 + g*g, D_vis)` -> LLM tokens `(N, num_queries + 1, D_llm)`."""

    def __init__(self, config: Owl2AbstractorConfig, text_hidden_size: int):
        super().__init__()
        self.config = config
        self.query_embeds = nn.Parameter(torch.empty(1, config.num_queries, config.hidden_size))
        self.layers = nn.ModuleList(AbstractorLayer(config) for _ in range(config.num_hidden_layers))
        self.proj = nn.Linear(config.hidden_size, text_hidden_size)  # official visual_fc
        self.eos_embed = nn.Parameter(torch.empty(1, 1, text_hidden_size))  # official vit_eos

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        n, num_tokens, width = image_tokens.shape
        grid_size = round((num_tokens - 1) ** 0.5)
        if grid_size * grid_size + 1 != num_tokens:
            raise ValueError(
                f"the abstractor expects a class token plus a square patch grid, got {num_tokens} tokens per image"
            )
        device, dtype = image_tokens.device, image_tokens.dtype
        query_pos = sincos_1d(width, torch.arange(self.config.num_queries, device=device)).to(dtype)
        image_pos = sincos_2d(width, grid_size, device=device).to(dtype)

        hidden = self.query_embeds.expand(n, -1, -1)  # (N, Q, D)
        for layer in self.layers:
            hidden = layer(hidden, image_tokens, query_pos, image_pos)
        hidden = self.proj(hidden)  # (N, Q, D_llm)
        return torch.cat([hidden, self.eos_embed.expand(n, -1, -1)], dim=1)  # (N, Q + 1, D_llm)
