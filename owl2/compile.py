"""`torch.compile` for both families, applied from outside the model (as torchtitan does): compiled decoding
steps for generation, compiled blocks for training.

Generation. transformers compiles the decoding step itself when the cache is static
(`cache_implementation="static"` plus a `CompileConfig`); the prompt's forward, which splices the modality
tokens, stays eager. `MultimodalGenerationMixin` makes that work for spliced prompts: the static cache is
sized for the rows after the splice, and a decoding step reads everything from shapes, with no host sync, so
it compiles to one graph (`fullgraph=True` here: a graph break is an error, not a silent slowdown).

Training. Every repeated block of the model (the classes in `_no_split_modules`: decoder layers, ViT blocks,
abstractor layers) is compiled on its own, with `fullgraph=True`. The splice and the modality routing, with
their one host sync, run eagerly between the blocks and hand each block tensors, so no block breaks on them;
the routing's token counts reach the blocks as sizes, which dynamo treats as dynamic after their first change
instead of recompiling for every batch. Regional compilation is also what keeps compile time to one block's
worth however deep the model is.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from owl2.models import varlen


def generation_compile_kwargs(model: nn.Module, backend: str = "inductor", mode: str | None = None) -> dict[str, Any]:
    """Keywords for `model.generate` that compile its decoding steps over a static cache.

    Args:
        model: Either family's model (or any transformers causal LM).
        backend: `torch.compile` backend; `aot_eager` checks tracing without code generation.
        mode: `torch.compile` mode; default `reduce-overhead` (CUDA graphs) on a GPU, none on a CPU.

    Returns:
        `cache_implementation` and `compile_config`, to pass on as `model.generate(..., **kwargs)`.
    """
    from transformers import CompileConfig

    device = next(model.parameters()).device
    if mode is None and device.type == "cuda":
        mode = "reduce-overhead"
    config = CompileConfig(fullgraph=True, backend=backend, mode=mode)
    config._compile_all_devices = device.type == "cpu"  # transformers compiles on accelerators only, unasked
    return {"cache_implementation": "static", "compile_config": config}


def compile_for_generation(model: nn.Module, backend: str = "inductor", mode: str | None = None) -> dict[str, Any]:
    """Compile `model` for `generate`: its blocks in place, for the prompt's forward (once: a second call with the
    same backend and mode changes nothing), and the keywords that compile the decoding steps.

    The prompt's forward (the modality encoders, the splice, the prefill) is eager under
    `generation_compile_kwargs` alone; with one image and a short answer it is about half of a CPU generation's
    time. The encoders' blocks are compiled here (dynamic sizes, no CUDA graphs); the decoder's layers are not:
    over a cache each layer reads its own `layer_idx`, which dynamo specialises on, so a 32-layer decoder would
    need 32 graphs of one code object, past dynamo's recompile limit. The decoding steps compile the decoder
    whole, through transformers.

    Returns:
        `generation_compile_kwargs(model, backend, mode)`, to pass on as `model.generate(..., **kwargs)`.
    """
    compile_blocks(model, backend=backend, exclude=("language_model",), missing_ok=True)
    return generation_compile_kwargs(model, backend, mode)


def compile_blocks(
    model: nn.Module,
    backend: str = "inductor",
    mode: str | None = None,
    exclude: tuple[str, ...] = (),
    missing_ok: bool = False,
) -> list[str]:
    """Compile, in place, every module of `model` whose class is one of its `_no_split_modules`.

    Parameters keep their identity (optimizers, DeepSpeed and checkpoints see the same tensors) and state
    dict keys are unchanged: each block's `forward` is replaced by its compiled self, the module stays.
    A block already compiled with the same backend and mode is left as it is.

    Compiled blocks of one class share dynamo's recompile budget (`torch._dynamo.config.recompile_limit`) in a
    process, across models: a process that compiles many differently configured models may need it raised.

    Args:
        exclude: Submodule names (`language_model`) whose blocks stay eager.
        missing_ok: Return an empty list, instead of raising, when no block is found.

    Returns:
        The names of the compiled modules.

    Raises:
        ValueError: If the model names no block classes, or none of its modules is one.
    """
    config = getattr(model, "config", None)
    if config is not None and getattr(config.get_text_config(), "_attn_implementation", None) == varlen.NAME:
        raise ValueError(
            f"attn_implementation {varlen.NAME!r} finds its samples on the host, which breaks a compiled graph; "
            "compile with 'sdpa' (or 'flash_attention_2'), or train eagerly"
        )
    classes = set(getattr(model, "_no_split_modules", None) or ())
    if not classes:
        raise ValueError(f"{type(model).__name__} lists no block classes in _no_split_modules; nothing to compile")
    compiled = []
    for name, module in model.named_modules():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in exclude):
            continue
        if type(module).__name__ in classes:
            if getattr(module, "_owl2_compiled_with", None) != (backend, mode):
                module.forward = _compiled_forward(module, backend, mode)
                module._owl2_compiled_with = (backend, mode)
            compiled.append(name)
    if not compiled and not missing_ok:
        raise ValueError(f"{type(model).__name__} has no module of its block classes {sorted(classes)}")
    return compiled


def _compiled_forward(module: nn.Module, backend: str, mode: str | None) -> Callable:
    """`module`'s forward, compiled, with gradient checkpointing where transformers' layers have it.

    transformers wraps the `forward` of every `GradientCheckpointingLayer` subclass in one function whose code
    object all classes share; compiled as it is, every block class's variants would pile up under that one code
    object's recompile limit. So the class's own forward is compiled (dynamic sizes from the start: sequence
    lengths and modality token counts change from batch to batch), and checkpointing is applied around it, as
    the wrapper does in training (where no cache is passed).
    """
    forward = type(module).forward
    inner = torch.compile(getattr(forward, "__wrapped__", forward), fullgraph=True, dynamic=True, backend=backend,
                          mode=mode)  # fmt: skip

    def compiled_forward(*args, **kwargs):
        if getattr(module, "gradient_checkpointing", False) and module.training and torch.is_grad_enabled():
            return module._gradient_checkpointing_func(partial(inner, module, **kwargs), *args)
        return inner(module, *args, **kwargs)

    return compiled_forward


def compiler_stats() -> dict[str, int]:
    """Dynamo's counters since the process started: graphs compiled and graph breaks."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


__all__ = ["compile_blocks", "compile_for_generation", "compiler_stats", "generation_compile_kwargs"]
