"""Data for a training run: the data set, tokenizer and processor from the config, and a resumable sampler
(official `train.py` `make_supervised_data_module`).

With `data.synthetic`, rank 0 writes the built-in synthetic data set and tokenizer into
`output_dir/synthetic` (once; later runs and other ranks reuse it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler
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
        size: Samples per megabatch (per-rank batch x world size).
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


class ResumableSampler(Sampler[int]):
    """This rank's share of each epoch's modality-pure megabatches, starting `skip` samples in.

    Resuming sets `skip` to the samples this rank already consumed in the epoch, so the run continues
    exactly where it stopped without loading the skipped samples. Each epoch's order is a function of
    `(seed, epoch)`, the same on every rank.
    """

    def __init__(self, lengths: list[int], config: TrainConfig, world_size: int, rank: int):
        self.lengths = list(lengths) if config.data.group_by_modality else [abs(n) or 1 for n in lengths]
        self.batch_size, self.world_size, self.rank = config.micro_batch_size, world_size, rank
        self.seed = config.seed
        self.epoch = self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        """Select the epoch's order and the number of this rank's samples to pass over."""
        self.epoch, self.skip = epoch, skip

    def _mine(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        megabatches = modality_megabatches(self.lengths, self.batch_size * self.world_size, generator)
        shares = (deal_to_ranks(megabatch, self.lengths, self.world_size)[self.rank] for megabatch in megabatches)
        return [i for share in shares for i in share]

    def epoch_length(self) -> int:
        """Samples this rank sees in one epoch."""
        size = self.batch_size * self.world_size
        image = sum(1 for n in self.lengths if n > 0)
        groups = -(-image // size) + -(-(len(self.lengths) - image) // size)
        return groups * self.batch_size

    def __len__(self) -> int:
        return self.epoch_length() - self.skip

    def __iter__(self) -> Iterator[int]:
        return iter(self._mine()[self.skip :])
