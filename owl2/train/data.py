"""Data for a training run: the data set, tokenizer and processor from the config, and a resumable sampler
(official `train.py` `make_supervised_data_module`).

The sampler deals out global batches: which samples make up a step never depends on the world size, so
a run resumed on another number of ranks continues with exactly the samples it would have seen.

With `data.synthetic`, rank 0 writes the built-in synthetic data set and tokenizer into
`output_dir/synthetic` (once; later runs and other ranks reuse it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from owl2.data import SupervisedDataset, write_synthetic_dataset
from owl2.data.sampler import deal_to_ranks
from owl2.processing import Owl2ImageProcessor, Owl2Processor
from owl2.train.config import ConfigError, TrainConfig

SYNTHETIC_DIR = "synthetic"
"""Sub-folder of `output_dir` holding the synthetic data set."""


def prepare_synthetic(config: TrainConfig, image_size: int) -> Path:
    """Write the synthetic data set into `output_dir/synthetic` on rank 0 (if not there yet); all ranks wait."""
    folder = Path(config.output_dir) / SYNTHETIC_DIR
    done = folder / ".complete"
    if dist.get_rank() == 0 and not done.exists():
        write_synthetic_dataset(
            folder,
            seed=config.seed,
            num_stage1=config.data.synthetic_records,
            num_stage2=config.data.synthetic_records,
            image_size=image_size,
        )
        done.touch()
    dist.barrier()
    return folder


def resolve_paths(config: TrainConfig, image_size: int) -> tuple[Path, Path | None, Path]:
    """`(data file, image folder, tokenizer folder)` after the synthetic and `init_from` defaults."""
    data, images, tokenizer = config.data.path, config.data.image_folder, config.data.tokenizer
    if config.data.synthetic:
        folder = prepare_synthetic(config, image_size)
        data = data or str(folder / f"{config.data.synthetic_split}.jsonl")
        images = images or str(folder / "images")
        tokenizer = tokenizer or str(folder / "tokenizer")
    if not tokenizer and config.init_from and (Path(config.init_from) / "tokenizer_config.json").is_file():
        tokenizer = config.init_from
    if not tokenizer:
        raise ConfigError("data.tokenizer: expected a tokenizer folder (init_from has none and data.synthetic is off)")
    if not Path(tokenizer).is_dir():
        raise ConfigError(f"data.tokenizer: {tokenizer} is not a folder; expected a tokenizer folder")
    if images and not Path(images).is_dir():
        raise ConfigError(f"data.image_folder: {images} is not a folder")
    return Path(data), Path(images) if images else None, Path(tokenizer)


def build_data(
    config: TrainConfig, image_size: int, num_image_tokens: int
) -> tuple[SupervisedDataset, Owl2Processor]:
    """The supervised data set and the processor to ship with the trained model."""
    data, images, tokenizer_dir = resolve_paths(config, image_size)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    image_processor = Owl2ImageProcessor(size=image_size, aspect=config.data.image_aspect)
    dataset = SupervisedDataset(
        data,
        tokenizer,
        image_processor,
        image_folder=images,
        template=config.data.template,
        max_length=config.data.max_length,
        num_image_tokens=num_image_tokens,
        on_error=config.data.on_error,
    )
    return dataset, Owl2Processor(tokenizer, image_processor, template=config.data.template)


def modality_megabatches(lengths: list[int], size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch as megabatches of exactly `size` samples, each of a single modality.

    Like the official `get_modality_length_grouped_indices` (shuffle, cut, shuffle the cuts; each cut
    is sorted longest first when `deal_to_ranks` splits it between the ranks), except that a
    modality's last cut is filled by wrapping around its own samples instead of being merged with
    the other modality. So at every micro-step, every rank has the same modality: with ZeRO-3 a rank
    skipping the vision tower while another runs it would desynchronise the parameter gathers.

    Args:
        lengths: Signed lengths (positive: with images; negative: text-only).
        size: Samples per megabatch (the global batch).
        generator: Source of randomness.
    """
    megabatches = []
    for indices in ([i for i, n in enumerate(lengths) if n > 0], [i for i, n in enumerate(lengths) if n <= 0]):
        if not indices:
            continue
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        order += [order[i % len(order)] for i in range(-len(order) % size)]
        for start in range(0, len(order), size):
            megabatches.append(order[start : start + size])
    return [megabatches[i] for i in torch.randperm(len(megabatches), generator=generator).tolist()]


class ResumableSampler:
    """Each epoch as a sequence of global batches, the same whatever the world size, and this rank's
    micro-batches of them.

    A global batch is `global_batch_size` samples of one modality: the official trainer's megabatch
    (LLaVA's `LengthGroupedSampler` with `world_size * gradient_accumulation_steps` ranks of
    `train_batch_size`). Its samples depend only on `(seed, epoch)`; the world size only decides how
    they are dealt out: `deal_to_ranks` gives each rank an equal share (longest first), which the rank
    cuts into `accumulation` micro-batches. So the data position is the number of global batches done,
    and a run resumed on another world size sees exactly the samples the uninterrupted run would have,
    step for step.
    """

    def __init__(self, lengths: list[int], config: TrainConfig, world_size: int, rank: int):
        """Build the sampler.

        Args:
            lengths: `SupervisedDataset.lengths` (signed by modality).
            config: The training config: micro batch, global batch, seed, `data.group_by_modality`.
            world_size: Data-parallel ranks.
            rank: This rank, in `[0, world_size)`.

        Raises:
            ConfigError: If the global batch does not split into micro-batches on `world_size` ranks, or
                exceeds the data set.
        """
        self.lengths = list(lengths) if config.data.group_by_modality else [abs(n) or 1 for n in lengths]
        self.micro_batch_size, self.world_size, self.rank = config.micro_batch_size, world_size, rank
        self.global_batch_size = config.global_batch(world_size)
        self.accumulation = config.accumulation_steps(world_size)
        self.seed = config.seed
        if self.global_batch_size > len(self.lengths):
            raise ConfigError(f"global_batch_size: {self.global_batch_size} exceeds the {len(self.lengths)} samples "
                              "of one epoch")
        self._epoch: tuple[int, list[list[int]]] | None = None

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of `epoch`, as sample indices: a function of `(seed, epoch)` alone."""
        if self._epoch is None or self._epoch[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch = epoch, modality_megabatches(self.lengths, self.global_batch_size, generator)
        return self._epoch[1]

    def batches_per_epoch(self) -> int:
        """Global batches (optimizer steps) in one epoch."""
        image = sum(1 for n in self.lengths if n > 0)
        return -(-image // self.global_batch_size) + -(-(len(self.lengths) - image) // self.global_batch_size)

    def micro_batches(self, epoch: int, start: int = 0) -> list[list[int]]:
        """This rank's micro-batches of `epoch` from global batch `start` on: `accumulation` per global batch."""
        micro = []
        for batch in self.global_batches(epoch)[start:]:
            share = deal_to_ranks(batch, self.lengths, self.world_size)[self.rank]
            micro += [share[i : i + self.micro_batch_size] for i in range(0, len(share), self.micro_batch_size)]
        return micro
