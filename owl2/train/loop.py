"""The training loop on the DeepSpeed engine (official `train.py` `train()` and the transformers
`Trainer` loop it relies on; paper section 3.3 "Training Paradigm").

`run(config)` checks that `output_dir` is writable, builds the model, applies the stage policy, builds
the data, AdamW groups and the schedule, resumes from the newest good checkpoint in `output_dir` if any,
trains, and writes `final/`. The same code runs as one plain process or under the `deepspeed` launcher on
many nodes, and a checkpoint written on one world size resumes on another (`owl2.train.checkpoint`):
each step is one global batch of `global_batch_size` samples, accumulated over as many micro-batches as
the world size needs. SIGTERM, SIGUSR1 and a first Ctrl-C stop it after the current step with a checkpoint
(`owl2.train.preemption`); a failed write stops it with `OutputWriteError` (`owl2.train.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from owl2.compile import compile_blocks
from owl2.constants import IGNORE_INDEX
from owl2.data.dataset import Collator
from owl2.families import config_model_type, family, model_type
from owl2.models.multimodal import MultimodalPreTrainedModel
from owl2.processing.processor import batch_to
from owl2.train import checkpoint as ckpt
from owl2.train import engine as ds
from owl2.train.config import ConfigError, TrainConfig, load_deepspeed_config
from owl2.train.data import ResumableSampler, build_data, mixture_sources
from owl2.train.metrics import SAMPLE_IDS_FILE, MetricsWriter, StepLog, plot_loss_curve
from owl2.train.optim import param_groups
from owl2.train.policy import ONELLM_STAGES, STAGES, apply_policy, trainable_patterns
from owl2.train.preemption import (
    Preempted,
    StopSignals,
    clear_requeue_marker,
    signal_name,
    write_requeue_marker,
)
from owl2.train.schedule import build_scheduler, warmup_steps_for

FINAL_DIR = "final"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stops before the update so the last checkpoint stays good."""


def model_family(config: TrainConfig) -> str:
    """The `model_type` the run trains ("owl2" or "onellm"): `init_from`'s, else `model_config`'s.

    Raises:
        ConfigError: If the folder or preset is unreadable or of another model type, or if the stage, the
            `modalities` or `image_size` do not fit the family (naming the key).
    """
    try:
        if config.init_from:
            if not (Path(config.init_from) / "config.json").is_file():
                raise ConfigError(f"init_from: {config.init_from} is not a model folder (no config.json)")
            kind = model_type(config.init_from)
        else:
            kind = config_model_type(config.model_config)
    except ValueError as e:
        raise ConfigError(f"{'init_from' if config.init_from else 'model_config'}: {e}") from None
    onellm = kind == "onellm"
    if onellm != (config.stage in ONELLM_STAGES):
        stages = sorted(ONELLM_STAGES if onellm else STAGES)
        raise ConfigError(f"stage: {config.stage!r} is not a stage of a {kind} model; expected one of {stages}")
    if not onellm and (config.modalities or config.init_from_image):
        key = "modalities" if config.modalities else "init_from_image"
        raise ConfigError(f"{key}: only OneLLM stages take modalities; an owl2 model has images only")
    if onellm and config.image_size:
        raise ConfigError("image_size: OneLLM's inputs are sized by its config (media_config.json); expected 0")
    return kind


def build_model(config: TrainConfig) -> MultimodalPreTrainedModel:
    """`init_from` (or a fresh model from `model_config`), in train mode; mPLUG-Owl2's at `image_size`."""
    model_class, _ = family(model_family(config))
    torch.manual_seed(config.seed)  # the same init on every rank
    if config.init_from:
        model = model_class.from_pretrained(config.init_from, dtype=torch.float32)
    else:
        model = model_class(model_class.config_class.from_json_file(config.model_config))
    if config.image_size and config.image_size != model.config.vision_config.image_size:
        model.set_image_size(config.image_size)
    if config.activation_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    return model.train()


def stage_patterns(config: TrainConfig, model) -> tuple[str, ...]:
    """The trainable globs of the run: `trainable`, or the stage's (OneLLM's with the modalities it trains)."""
    if config.stage not in ONELLM_STAGES:
        return trainable_patterns(config.stage, config.trainable)
    built = model.config.modalities
    unknown = [m for m in (*config.modalities, *config.init_from_image) if m not in built]
    if unknown:
        raise ConfigError(f"modalities: {unknown} are not among the model's {list(built)}")
    modalities = built if config.stage == "onellm_instruct_release" else config.modalities
    try:
        return trainable_patterns(config.stage, config.trainable, modalities)
    except ValueError as e:
        raise ConfigError(f"modalities: {e}") from None


def run(config: TrainConfig) -> Path:
    """Train one stage as configured; resumes from `output_dir`'s newest good checkpoint if there is one.

    Works in-process (one rank, gloo) or under the `deepspeed` launcher.

    Returns:
        `output_dir/final`, loadable with the family's `from_pretrained` (`owl2.eval.generation.load_pretrained`).

    Raises:
        NonFiniteLossError: If the loss turns NaN or inf (the message names the step).
        OutputWriteError: If `output_dir`, a checkpoint or `final/` cannot be written (a full disk, a quota, a
            read-only mount): the message names the folder and the space needed and free.
        Preempted: After SIGTERM, SIGUSR1 or Ctrl-C, once the checkpoint of the step it stopped at is written.
    """
    config.validate()
    with StopSignals() as stop:
        return _run(config, stop)


def _run(config: TrainConfig, stop: StopSignals) -> Path:
    # HF tokenizers spread each call over a thread pool: for a data loader's short texts that costs more
    # than it saves, and the threads compete with torch's (on the 2-core demo, 6% of the step)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ds.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(config.output_dir)
    ckpt.check_output_dir(out, yaml.safe_dump(config.to_dict(), sort_keys=False))
    if rank == 0:
        clear_requeue_marker(out)  # this run is no longer waiting to be requeued
    resume_from = ckpt.resume_checkpoint(out)
    saved, written_by = ckpt.read_trainer_state(resume_from) if resume_from is not None else (None, None)
    if saved is not None:  # 0 keeps the checkpoint's global batch, whatever the world size is now
        config = dataclasses.replace(config, global_batch_size=config.global_batch_size or saved.global_batch_size)

    model = build_model(config)
    if config.init_from_image and resume_from is None:
        from owl2.models.image_init import init_from_image  # OneLLM's

        init_from_image(model, config.init_from_image)  # on resume the checkpoint holds the result
    apply_policy(model, stage_patterns(config, model))
    if config.compile:
        compile_blocks(model)
    dataset, processor = build_data(config, model)
    mixture = mixture_sources(dataset, config) if config.data.sources else None
    sampler = ResumableSampler(dataset.lengths, config, world, rank, dataset.groups, mixture)
    total = config.max_steps or math.ceil(config.num_epochs * sampler.batches_per_epoch())
    warmup = warmup_steps_for(total, config.optim.warmup_steps, config.optim.warmup_ratio)

    groups = param_groups(model, config.optim, model.config.vision_config.num_hidden_layers)
    universal = saved is not None and ckpt.needs_universal(resume_from, written_by, world)
    ds_config = ds.resolve_config(load_deepspeed_config(config.deepspeed), config, world,
                                  model.config.text_config.hidden_size, load_universal=universal)
    if saved is not None:
        ckpt.check_resumable(resume_from, saved, written_by, config.global_batch(world), config.seed,
                             ds_config["zero_optimization"].get("stage", 0))
    engine = ds.build_engine(
        model, groups, ds_config, lambda opt: build_scheduler(opt, warmup, total, config.optim.min_lr_ratio)
    )
    clip = config.gradient_clipping if ds.trainer_clips(ds_config) else 0.0
    if resume_from is not None:
        state = ckpt.load_checkpoint(engine, resume_from, universal)
    else:
        state = ckpt.TrainerState(global_batch_size=config.global_batch(world), seed=config.seed)
        torch.manual_seed(config.seed + rank)
    writer = MetricsWriter(out, state.step, config.tensorboard) if rank == 0 else None
    progress = tqdm(total=total, initial=state.step, disable=rank != 0, desc=f"{config.stage}", dynamic_ncols=True)
    try:
        _train(engine, config, dataset, Collator.for_processor(processor), sampler, state, total, writer, progress, clip,
               stop)
    finally:
        progress.close()  # ends the bar's line before any message
        if writer is not None:
            writer.close()
    final = save_final(engine, processor, out)
    if rank == 0:
        plot_loss_curve(out)
    return final


def _global_batches(dataset, config: TrainConfig, collator: Collator, sampler: ResumableSampler,
                    state: ckpt.TrainerState) -> Iterator[list[tuple[dict, bool, list[int]]]]:
    """Endless global batches from the saved data position, advancing `state` across epochs: for each, this
    rank's `sampler.accumulation` micro-batches as `(batch, empty, ids)`.

    `empty` marks a micro-batch whose records were all bad and skipped: the previous batch stands in
    (with zero weight) so every rank still runs the same collectives. `ids` are its sample indices.
    """
    last, micro = None, []
    while True:
        plan = sampler.micro_batches(state.epoch, state.samples_in_epoch // sampler.global_batch_size)
        loader = DataLoader(dataset, batch_sampler=plan, collate_fn=collator,
                            num_workers=config.data.num_workers)
        for ids, batch in zip(plan, loader):  # the loader keeps the plan's order, workers or not
            if batch is None and last is None:
                raise RuntimeError(f"epoch {state.epoch}: the first micro-batch has no usable record")
            micro.append((last, True, ids) if batch is None else (batch, False, ids))
            last = batch if batch is not None else last
            if len(micro) == sampler.accumulation:
                state.samples_in_epoch += sampler.global_batch_size
                yield micro
                micro = []
        state.epoch, state.samples_in_epoch = state.epoch + 1, 0


def _log_sample_ids(log: StepLog | None, step: int, epoch: int, micro: list[tuple[dict, bool, list[int]]]) -> None:
    """Gather every rank's sample ids of the step just taken into rank 0's `log` (collective)."""
    mine = [i for _, _, ids in micro for i in ids]
    ranks: list[list[int]] | None = [[] for _ in range(dist.get_world_size())] if log is not None else None
    dist.gather_object(mine, ranks, dst=0)
    if log is not None:
        log.log({"step": step, "epoch": epoch, "ranks": ranks})


def _train(engine, config: TrainConfig, dataset, collator: Collator, sampler: ResumableSampler, state: ckpt.TrainerState,
           total: int, writer: MetricsWriter | None, progress: tqdm, clip: float, stop: StopSignals) -> None:
    """Run optimizer steps until `total` (or `stop_at_step`), logging and checkpointing on the way.

    `clip` > 0 clips the all-reduced gradients to that global norm before each update (where DeepSpeed
    does not; see `engine.trainer_clips`). Once any rank's `stop` has a signal, every rank finishes the
    step, checkpoints it and raises `Preempted`.

    The loss of a step is the mean over every supervised token of its global batch (all micro-batches,
    all ranks), so the result does not depend on how the batch is split over ranks and accumulation.
    """
    rank, world, out = dist.get_rank(), dist.get_world_size(), Path(config.output_dir)
    accum = sampler.accumulation
    last = min(total, config.stop_at_step or total)
    ids_log = StepLog(out / SAMPLE_IDS_FILE, state.step) if config.log_sample_ids and rank == 0 else None
    window = torch.zeros(4, dtype=torch.float64)  # loss sum, steps, samples, tokens (all ranks)
    started, saved_at = time.perf_counter(), state.step
    per_input = engine.module.config.num_tokens_per_input
    placeholder_ids = torch.tensor(list(collator.placeholders.values()))
    trainable = [p for p in engine.module.parameters() if p.requires_grad]
    grad_norm = None
    stream = _global_batches(dataset, config, collator, sampler, state)
    while state.step < last:
        micro = next(stream)
        epoch = state.epoch
        counts = torch.tensor(
            [0.0 if empty else float((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b, empty, _ in micro]
            + [0.0 if empty else b["input_ids"].shape[0] for b, empty, _ in micro], dtype=torch.float64)
        dist.all_reduce(counts)
        supervised, samples = float(counts[:accum].sum()), float(counts[accum:].sum())
        # DeepSpeed divides by `accum` and averages over ranks; this undoes both for a global token mean
        num_items = torch.tensor(max(supervised, 1.0) / (world * accum))
        stats = torch.zeros(4, dtype=torch.float64)  # loss, non-finite micro-batches, tokens, stop requests
        lr = max(engine.get_lr())
        for batch, empty, _ in micro:
            inputs = int(torch.isin(batch["input_ids"], placeholder_ids).sum())
            loss = engine(**batch_to(batch, engine.device), num_items_in_batch=num_items).loss
            if empty:
                loss = loss * 0.0
            finite = bool(torch.isfinite(loss.detach()))
            step_stats = torch.tensor([loss.item() / (world * accum) if finite else 0.0, float(not finite),
                                       int(batch["attention_mask"].sum()) + inputs * (per_input - 1),
                                       float(stop.requested)], dtype=torch.float64)
            dist.all_reduce(step_stats)  # the same sums on every rank: they agree on NaN and on stopping
            if step_stats[1] > 0:  # checked before the update, on every rank alike
                latest = ckpt.latest_checkpoint(out)
                raise NonFiniteLossError(
                    f"non-finite loss at step {state.step + 1} on {int(step_stats[1])} of {world} ranks; stopping "
                    f"before the update. Last good checkpoint: {latest if latest else 'none'}"
                )
            stats += step_stats
            engine.backward(loss)
            if clip and engine.is_gradient_accumulation_boundary():
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, clip, foreach=True)
            engine.step()
        state.step += 1
        progress.update(1)
        if config.log_sample_ids:
            _log_sample_ids(ids_log, state.step, epoch, micro)
        window += torch.tensor([stats[0], 1.0, samples, stats[2]], dtype=torch.float64)
        if state.step % config.logging_steps == 0 or state.step == last:
            elapsed = max(time.perf_counter() - started, 1e-9)
            record = {"step": state.step, "loss": float(window[0] / window[1]), "lr": lr,
                      "samples_per_s": float(window[2] / elapsed), "tokens_per_s": float(window[3] / elapsed),
                      "epoch": state.epoch}
            if not clip:
                grad_norm = engine.get_global_grad_norm()
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)  # of the step just taken, before clipping
            progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}",
                                 samples_s=f"{record['samples_per_s']:.1f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if writer is not None:
                writer.log(record)
            window.zero_()
            started = time.perf_counter()
        stopping = stats[3] > 0 and state.step < last
        if (config.save_steps and state.step % config.save_steps == 0) or state.step == last or stopping:
            ckpt.save_checkpoint(engine, out, state, config.save_total_limit)
            saved_at = state.step
        if stopping:
            who = signal_name(stop.received) if stop.requested else "a stop signal to another rank"
            message = (f"stopped after step {state.step} of {total} on {who}; checkpoint-{state.step} is "
                       "written: re-run the same command to resume")
            if dist.get_rank() == 0:
                write_requeue_marker(out, state.step, message)
            # before any rank exits: a launcher kills the others when the first one does
            dist.barrier()
            raise Preempted(message, state.step)
    if saved_at != state.step:
        ckpt.save_checkpoint(engine, out, state, config.save_total_limit)


def save_final(engine, processor, output_dir: Path) -> Path:
    """Write `final/` (consolidated weights, config, tokenizer, image processor) atomically; every rank.

    Raises:
        OutputWriteError: If rank 0 cannot write it (the partial `.final.tmp` is removed; the checkpoints stay).
    """
    state = ds.consolidated_state_dict(engine)
    final, tmp = output_dir / FINAL_DIR, output_dir / f".{FINAL_DIR}.tmp"
    if dist.get_rank() == 0:
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            engine.module.save_pretrained(tmp, state_dict=state)
            processor.save_pretrained(tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except ckpt.WRITE_ERRORS as e:
            if not ckpt.is_write_failure(e):
                raise
            weights = sum(t.numel() * t.element_size() for t in state.values())
            raise ckpt.write_error(e, tmp, f"{FINAL_DIR}/", weights, "the weights alone") from e
    dist.barrier()
    return final
