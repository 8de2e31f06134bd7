"""OneLLM's universal projection module, UPM (paper section 3.1, Eq. 1-2; official `onellm.py`, `encode_image`).

K projection experts, each a stack of LLaMA-style blocks (RMSNorm pre-norm, non-causal attention
without RoPE, SwiGLU), are shared by every modality. Each modality m has its own learnable modality
tokens q_m, input projection, router, output projection to the LLM width, and start / end tags.
For one batch of CLIP features x (the universal encoder's output, class token included):

    h   = [q_m ; LN(W_in x)]                          (N, Q + L, H)
    w   = route(R_m(q_m))                             (1, Q, K)   sigmoid / sum (release) or softmax (Eq. 2)
    out = LN(W_out sum_k w[..., k] * P_k(h)[:, :Q])   (N, Q, D_llm)

and the LLM receives `[start_m; out; end_m]`, Q + 2 tokens.

The router is "dynamic" in name only. The release routes every token of h and keeps the weights of
the first Q; its MLP acts on each token alone and those Q positions hold the learned modality tokens,
so the weights that are used do not depend on the input: they are a learned constant table per
(modality, token, expert). Hence the router runs on q_m alone (same result, without the L input
tokens), and `precompute_router()` caches the table for inference.

The release runs the K experts one after another, each over the whole sequence. `run_experts` runs them
as one batched computation (each layer's weights stacked over the experts, one batched matmul per
projection, one attention call), and computes the last layer for the Q kept tokens only; the parameters
keep the release's per-expert layout. `tools/bench.py --sections upm` measures it against the release's loop.

Key map from the release (`consolidated.00-of-01.pth`; keys relative to this module and to
`UniversalEncoder`, one to one, every tensor copied unchanged unless noted):

    llma.resample_layers.{k}.{i}.attention_norm.weight      experts.{k}.layers.{i}.attn_norm.weight
    llma.resample_layers.{k}.{i}.attention.wq.weight        experts.{k}.layers.{i}.attn.q_proj.weight
    llma.resample_layers.{k}.{i}.attention.wk.weight        experts.{k}.layers.{i}.attn.k_proj.weight
    llma.resample_layers.{k}.{i}.attention.wv.weight        experts.{k}.layers.{i}.attn.v_proj.weight
    llma.resample_layers.{k}.{i}.attention.wo.weight        experts.{k}.layers.{i}.attn.o_proj.weight
    llma.resample_layers.{k}.{i}.ffn_norm.weight            experts.{k}.layers.{i}.mlp_norm.weight
    llma.resample_layers.{k}.{i}.feed_forward.w1.weight     experts.{k}.layers.{i}.mlp.gate_proj.weight
    llma.resample_layers.{k}.{i}.feed_forward.w3.weight     experts.{k}.layers.{i}.mlp.up_proj.weight
    llma.resample_layers.{k}.{i}.feed_forward.w2.weight     experts.{k}.layers.{i}.mlp.down_proj.weight
    llma.resample_tokens.{m}                                modality_tokens.{m}              (1, Q, H)
    llma.clip_proj1.{m}.0.{weight,bias}                     in_proj.{m}.linear.{weight,bias}
    llma.clip_proj1.{m}.1.{weight,bias}                     in_proj.{m}.norm.{weight,bias}
    llma.routers.{m}.fc1.{weight,bias}                      routers.{m}.fc1.{weight,bias}
    llma.routers.{m}.fc2.{weight,bias}                      routers.{m}.fc2.{weight,bias}
    llma.clip_proj2.{m}.0.{weight,bias}                     out_proj.{m}.linear.{weight,bias}
    llma.clip_proj2.{m}.1.{weight,bias}                     out_proj.{m}.norm.{weight,bias}
    llma.start_tag.{m}                                      start_tags.{m}                   (1, 1, D_llm)
    llma.end_tag.{m}                                        end_tags.{m}                     (1, 1, D_llm)
  UniversalEncoder:
    llma.conv1.{audio,imu,fmri}.{weight,bias}               tokenizers.{m}.proj.{weight,bias}  (imu: no bias)
    llma.conv1.point.conv1.{weight,bias}                    tokenizers.point.proj.{weight,bias}
    llma.positional_embedding.{m}                           pos_embeds.{m}                   (1 + L, width)
    llma.clip.visual.class_embedding                        clip.cls_token                   reshaped (D,) -> (1, 1, D)
    llma.clip.visual.positional_embedding                   clip.pos_embed                   reshaped -> (1, 1 + g*g, D)
    llma.clip.visual.conv1.weight                           clip.patch_embed.proj.weight
    llma.clip.visual.ln_pre.{weight,bias}                   clip.norm_pre.{weight,bias}
    llma.clip.visual.transformer.resblocks.{i}.ln_1         clip.blocks.{i}.norm1
    llma.clip.visual.transformer.resblocks.{i}.attn.in_proj_{weight,bias}   clip.blocks.{i}.attn.qkv.{weight,bias}
    llma.clip.visual.transformer.resblocks.{i}.attn.out_proj                clip.blocks.{i}.attn.proj
    llma.clip.visual.transformer.resblocks.{i}.ln_2         clip.blocks.{i}.norm2
    llma.clip.visual.transformer.resblocks.{i}.mlp.c_fc     clip.blocks.{i}.mlp.fc1
    llma.clip.visual.transformer.resblocks.{i}.mlp.c_proj   clip.blocks.{i}.mlp.fc2
    llma.clip.visual.ln_post.{weight,bias}                  clip.norm.{weight,bias}
    llma.clip.visual.proj                                   (dropped: the release never applies it)

The release's `llma.resample_layers` is a ModuleDict keyed "0".."K-1" and `experts` a ModuleList, so
`{k}` is the same string on both sides. (`llma.clip.*` is open_clip's ViT-L/14; `owl2.checkpoint.onellm`
holds the whole map, the LLaMA part included, and `tools/convert_checkpoint.py onellm` applies it.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from owl2.config import OneLLMProjectionConfig, check_onellm_modalities


class ExpertAttention(nn.Module):
    """Bidirectional multi-head self-attention, no RoPE, no biases (official `attention.w{q,k,v,o}`)."""

    def __init__(self, config: OneLLMProjectionConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)  # official wq
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)  # official wk
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)  # official wv
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)  # official wo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)  # (N, nh, L, hd)

        # The release calls flash attention with causal=False (its mask is None) and no position encoding.
        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.o_proj(out.transpose(1, 2).reshape(n, length, width))  # (N, L, H)


class ExpertMLP(nn.Module):
    """LLaMA's SwiGLU feed-forward, no biases (official `feed_forward.{w1,w3,w2}`)."""

    def __init__(self, config: OneLLMProjectionConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)  # official w1
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)  # official w3
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)  # official w2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ExpertBlock(GradientCheckpointingLayer):
    """One LLaMA-style pre-norm block of an expert (official `TransformerBlock`, called with no RoPE, no mask)."""

    def __init__(self, config: OneLLMProjectionConfig):
        super().__init__()
        self.attn_norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)  # official attention_norm
        self.attn = ExpertAttention(config)
        self.mlp_norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)  # official ffn_norm
        self.mlp = ExpertMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ProjectionExpert(nn.Module):
    """One projection expert P_k: `num_hidden_layers` blocks over the whole `(N, Q + L, H)` sequence."""

    def __init__(self, config: OneLLMProjectionConfig):
        super().__init__()
        self.layers = nn.ModuleList(ExpertBlock(config) for _ in range(config.num_hidden_layers))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                init.xavier_uniform_(module.weight)  # the release's `default_linear_init` for these layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`LlamaRMSNorm` with one weight per expert: `x` `(K, N, T, H)`, `weight` `(K, H)`; the same float32 steps."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight[:, None, None, :] * x.to(dtype)


def _linear(x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """One bias-free linear per expert, batched: `x` `(K, N, T, in)`, `weight_t` `(K, in, out)` -> `(K, N, T, out)`."""
    k, n, t, width = x.shape
    return torch.bmm(x.reshape(k, n * t, width), weight_t).view(k, n, t, -1)


def _experts_layer(blocks: Sequence[ExpertBlock], x: torch.Tensor, keep: int | None) -> torch.Tensor:
    """Layer i of every expert at once: `blocks` (one per expert), `x` `(K, N, T, H)` -> `(K, N, T', H)`.

    With `keep`, only the first `keep` tokens are computed past the keys and values (T' = keep): the last
    layer, whose other outputs the UPM discards.
    """
    first = blocks[0]
    stack = lambda get: torch.stack([get(b) for b in blocks])  # noqa: E731  (K, H)
    # (K, in, out), contiguous: bmm on CPU runs ~15% slower on a transposed view of (K, out, in)
    stack_t = lambda get: torch.stack([get(b).t() for b in blocks])  # noqa: E731
    k, n, t, width = x.shape
    heads, head_dim = first.attn.num_heads, first.attn.head_dim

    h = _rms_norm(x, stack(lambda b: b.attn_norm.weight), first.attn_norm.variance_epsilon)
    rows = h if keep is None else h[:, :, :keep]  # the tokens whose outputs are kept
    kept = rows.shape[2]
    q = _linear(rows, stack_t(lambda b: b.attn.q_proj.weight)).view(k * n, kept, heads, head_dim).transpose(1, 2)
    key = _linear(h, stack_t(lambda b: b.attn.k_proj.weight)).view(k * n, t, heads, head_dim).transpose(1, 2)
    value = _linear(h, stack_t(lambda b: b.attn.v_proj.weight)).view(k * n, t, heads, head_dim).transpose(1, 2)
    attended = F.scaled_dot_product_attention(q, key, value)  # (K * N, nh, T', hd); no mask, no RoPE
    attended = attended.transpose(1, 2).reshape(k, n, kept, width)
    x = (x if keep is None else x[:, :, :keep]) + _linear(attended, stack_t(lambda b: b.attn.o_proj.weight))

    h = _rms_norm(x, stack(lambda b: b.mlp_norm.weight), first.mlp_norm.variance_epsilon)
    gate = _linear(h, stack_t(lambda b: b.mlp.gate_proj.weight))
    up = _linear(h, stack_t(lambda b: b.mlp.up_proj.weight))
    return x + _linear(F.silu(gate) * up, stack_t(lambda b: b.mlp.down_proj.weight))


def run_experts(experts: Sequence[ProjectionExpert], hidden: torch.Tensor, keep: int) -> torch.Tensor:
    """Every expert over the same `(N, T, H)` input as one batched computation: `(K, N, keep, H)`, each expert's
    first `keep` output tokens.

    The same arithmetic as calling each expert and slicing its output, in other kernels: each layer's weights
    are stacked over the experts and every matmul and attention runs once for all K; the last layer computes
    queries, output and FFN for the kept tokens alone. Under gradient checkpointing (set on the blocks by
    `gradient_checkpointing_enable`) each layer is recomputed in the backward pass, as the blocks would be.
    """
    x = hidden.unsqueeze(0).expand(len(experts), *hidden.shape)  # (K, N, T, H)
    depth = len(experts[0].layers)
    for i in range(depth):
        blocks = [expert.layers[i] for expert in experts]
        keep_i = keep if i == depth - 1 else None
        first = blocks[0]
        if first.gradient_checkpointing and first.training and torch.is_grad_enabled():
            x = first._gradient_checkpointing_func(_experts_layer, blocks, x, keep_i)
        else:
            x = _experts_layer(blocks, x, keep_i)
    return x


class LinearNorm(nn.Module):
    """Linear then LayerNorm (the release's `nn.Sequential(nn.Linear, nn.LayerNorm)`, children `0` and `1`)."""

    def __init__(self, in_features: int, out_features: int, eps: float):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)  # official .0
        self.norm = nn.LayerNorm(out_features, eps=eps)  # official .1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


class UniversalProjection(nn.Module):
    """The UPM: CLIP features `(N, L, input_size)` of one modality -> `(N, Q, output_size)` LLM tokens.

    Args:
        config: The UPM's dimensions.
        modalities: The modalities to build modality tokens, router, projections and tags for.
        input_size: Width of the features it reads (CLIP's width).
        output_size: Width of the LLM it feeds.
    """

    def __init__(
        self, config: OneLLMProjectionConfig, modalities: Sequence[str], input_size: int, output_size: int
    ):
        super().__init__()
        self.config = config
        self.modalities = check_onellm_modalities(modalities)
        self.input_size, self.output_size = input_size, output_size
        hidden, queries = config.hidden_size, config.num_modality_tokens

        self.experts = nn.ModuleList(ProjectionExpert(config) for _ in range(config.num_experts))
        self.modality_tokens = nn.ParameterDict({m: nn.Parameter(torch.empty(1, queries, hidden)) for m in modalities})
        self.in_proj = nn.ModuleDict({m: LinearNorm(input_size, hidden, config.layer_norm_eps) for m in modalities})
        self.routers = nn.ModuleDict(
            {m: Mlp(hidden, config.router_hidden_size, config.num_experts, act_layer=nn.GELU) for m in modalities}
        )
        self.out_proj = nn.ModuleDict({m: LinearNorm(hidden, output_size, config.layer_norm_eps) for m in modalities})
        self.start_tags = nn.ParameterDict({m: nn.Parameter(torch.empty(1, 1, output_size)) for m in modalities})
        self.end_tags = nn.ParameterDict({m: nn.Parameter(torch.empty(1, 1, output_size)) for m in modalities})
        self._router_cache: dict[str, tuple[tuple, torch.Tensor]] = {}
        self.init_free_parameters()

    def init_free_parameters(self) -> None:
        """The release's initialisation of the parameters that belong to no layer.

        Modality tokens from N(0, 0.02); start and end tags from U[0, 1) (`torch.rand`). (The release
        initialises the experts' linears with Xavier-uniform, as `ProjectionExpert` does, and leaves the
        routers and projections at PyTorch's default.) A model's `_init_weights` calls this;
        transformers' init functions skip tensors already loaded.
        """
        for tokens in self.modality_tokens.values():
            init.normal_(tokens, mean=0.0, std=0.02)
        for tag in (*self.start_tags.values(), *self.end_tags.values()):
            init.uniform_(tag, 0.0, 1.0)
        self._router_cache = {}

    # -- routing -----------------------------------------------------------------------------------
    def _route(self, modality: str) -> torch.Tensor:
        """Expert weights of the modality tokens, `(1, Q, K)`, summing to 1 over the experts."""
        logits = self.routers[modality](self.modality_tokens[modality])  # (1, Q, K)
        if self.config.router_activation == "softmax":
            return logits.softmax(dim=-1)
        gates = logits.sigmoid()
        return gates / gates.sum(dim=-1, keepdim=True)

    def _router_key(self, modality: str) -> tuple:
        """Identifies the router's inputs: changes when a weight is updated in place, moved or reloaded."""
        tensors = (self.modality_tokens[modality], *self.routers[modality].parameters())
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)

    def precompute_router(self) -> None:
        """Cache every modality's routing table for inference (the router depends on no input).

        The cached table is used in eval mode while the router's weights and the modality tokens stay
        as they were; `train()`, or any change to those tensors (an optimizer step, `load_state_dict`,
        `.to()`), falls back to computing it. It carries no gradient.
        """
        with torch.no_grad():
            self._router_cache = {m: (self._router_key(m), self._route(m)) for m in self.modalities}

    def routing_weights(self, modality: str) -> torch.Tensor:
        """`(1, Q, K)` weights of each expert for each modality token: the cached table if valid, else computed."""
        cached = self._router_cache.get(modality)
        if not self.training and cached is not None and cached[0] == self._router_key(modality):
            return cached[1]
        return self._route(modality)

    def train(self, mode: bool = True) -> UniversalProjection:
        if mode:
            self._router_cache = {}
        return super().train(mode)

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, features: torch.Tensor, modality: str) -> torch.Tensor:
        """`(N, L, input_size)` CLIP features of `modality` -> `(N, Q, output_size)` projected modality tokens."""
        if modality not in self.modalities:
            raise ValueError(f"this projection module was built for {self.modalities}, not {modality!r}")
        if features.dim() != 3 or features.shape[-1] != self.input_size:
            raise ValueError(
                f"{modality} features must have shape (N, L, {self.input_size}) (batch, tokens, CLIP width), "
                f"got {tuple(features.shape)}"
            )
        n, queries = features.shape[0], self.config.num_modality_tokens
        tokens = self.modality_tokens[modality].expand(n, -1, -1)  # (N, Q, H)
        hidden = torch.cat([tokens, self.in_proj[modality](features)], dim=1)  # (N, Q + L, H)
        # The release routes all Q + L tokens of `hidden` and keeps the first Q: the modality tokens, whose
        # weights the input cannot change. So they are computed from the tokens alone (or cached).
        weights = self.routing_weights(modality).to(hidden.dtype)  # (1, Q, K)
        outputs = run_experts(self.experts, hidden, queries)  # (K, N, Q, H)
        mixed = (outputs * weights.permute(2, 0, 1).unsqueeze(-1)).sum(dim=0)  # sum_k w_k P_k(h): (N, Q, H)
        return self.out_proj[modality](mixed)  # (N, Q, D_llm)

    def embed_with_tags(self, features: torch.Tensor, modality: str) -> torch.Tensor:
        """The block the LLM receives for one input: `[start; Q projected tokens; end]`, `(N, Q + 2, output_size)`."""
        tokens = self(features, modality)
        n = tokens.shape[0]
        start = self.start_tags[modality].expand(n, -1, -1).to(tokens.dtype)
        end = self.end_tags[modality].expand(n, -1, -1).to(tokens.dtype)
        return torch.cat([start, tokens, end], dim=1)  # (N, Q + 2, D_llm)
