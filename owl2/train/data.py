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

from owl2.data.dataset import TEXT_GROUP, ConcatDataset, SupervisedDataset
from owl2.data.mixture import Source, mixture_batches
from owl2.data.sampler import deal_to_ranks
from owl2.data.synthetic import write_synthetic_dataset
from owl2.processing.processor import MultimodalProcessor
from owl2.train.config import ConfigError, DataSource, TrainConfig

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


def resolve_paths(config: TrainConfig, image_size: int) -> tuple[list[DataSource], Path]:
    """`(data sources, tokenizer folder)` after the synthetic and `init_from` defaults, each folder checked."""
    sources, tokenizer = config.data.data_sources(), config.data.tokenizer
    if config.data.synthetic:
        folder = prepare_synthetic(config, image_size)
        source = sources[0]
        sources = [DataSource(source.path or str(folder / f"{config.data.synthetic_split}.jsonl"),
                              source.image_folder or str(folder / "images"), 1)]  # fmt: skip
        tokenizer = tokenizer or str(folder / "tokenizer")
    if not tokenizer and config.init_from and (Path(config.init_from) / "tokenizer_config.json").is_file():
        tokenizer = config.init_from
    if not tokenizer:
        raise ConfigError("data.tokenizer: expected a tokenizer folder (init_from has none and data.synthetic is off)")
    if not Path(tokenizer).is_dir():
        raise ConfigError(f"data.tokenizer: {tokenizer} is not a folder; expected a tokenizer folder")
    for k, source in enumerate(sources):
        if source.image_folder and not Path(source.image_folder).is_dir():
            key = f"data.sources[{k}].image_folder" if config.data.sources else "data.image_folder"
            raise ConfigError(f"{key}: {source.image_folder} is not a folder")
    return sources, Path(tokenizer)


def build_processor(config: TrainConfig, model, tokenizer_dir: Path) -> MultimodalProcessor:
    """The family's processor for `model`: the tokenizer, the chat template and the inputs' sizes from its config."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    template = config.data.template or None  # None: the family's own
    if model.config.model_type == "onellm":
        from owl2.processing.media import OneLLMMediaProcessor  # the media loaders: only for OneLLM
        from owl2.processing.processor import OneLLMProcessor

        return OneLLMProcessor(tokenizer, OneLLMMediaProcessor.from_model_config(model.config), template=template)
    from owl2.processing.image import Owl2ImageProcessor
    from owl2.processing.processor import Owl2Processor

    image_processor = Owl2ImageProcessor(size=model.config.vision_config.image_size, aspect=config.data.image_aspect)
    return Owl2Processor(tokenizer, image_processor, template=template)


def build_data(config: TrainConfig, model) -> tuple[SupervisedDataset | ConcatDataset, MultimodalProcessor]:
    """The supervised data set (one per source, laid end to end for a mixture) and the processor to ship."""
    sources, tokenizer_dir = resolve_paths(config, model.config.vision_config.image_size)
    processor = build_processor(config, model, tokenizer_dir)
    datasets = [
        SupervisedDataset(
            source.path,
            processor,
            image_folder=source.image_folder or None,
            max_length=config.data.max_length,
            tokens_per_input=model.config.num_tokens_per_input,
            on_error=config.data.on_error,
        )
        for source in sources
    ]
    return (ConcatDataset(datasets) if config.data.sources else datasets[0]), processor


def mixture_sources(dataset: ConcatDataset, config: TrainConfig) -> tuple[list[Source], list[int]]:
    """The mixture's sources, one per (data file, modality group), and the sample index of each mixture index.

    A data file that mixes modalities (say instructions with text-only ones) gives one source per group, each
    with the file's repeat, so that every global batch still holds one modality.
    """
    sources, index = [], []
    for k, (entry, start) in enumerate(zip(config.data.data_sources(), dataset.offsets)):
        groups: dict[str, list[int]] = {}
        for i, group in enumerate(dataset.datasets[k].groups):
            groups.setdefault(group, []).append(start + i)
        for group, members in groups.items():
            sources.append(Source(f"data.sources[{k}] {entry.path} ({group})", group, len(members), entry.repeat))
            index += members
    return sources, index


def modality_megabatches(
    lengths: list[int], size: int, generator: torch.Generator, groups: list[str] | None = None
) -> list[list[int]]:
    """One epoch as megabatches of exactly `size` samples, each of a single modality group.

    Like the official `get_modality_length_grouped_indices` (shuffle, cut, shuffle the cuts; each cut
    is sorted longest first when `deal_to_ranks` splits it between the ranks), except that a
    group's last cut is filled by wrapping around its own samples instead of being merged with
    another group. So at every micro-step, every rank has the same modalities: with ZeRO-3 a rank
    skipping an encoder while another runs it would desynchronise the parameter gathers.

    Args:
        lengths: Signed lengths (positive: with inputs; negative: text-only).
        size: Samples per megabatch (the global batch).
        generator: Source of randomness.
        groups: Each sample's `modality_group`; None: by the sign of `lengths` (with inputs, then text-only).
            Groups are taken in sorted order, text-only last.
    """
    if groups is None:
        groups = [TEXT_GROUP if n <= 0 else "inputs" for n in lengths]
    names = sorted(set(groups) - {TEXT_GROUP}) + ([TEXT_GROUP] if TEXT_GROUP in groups else [])
    megabatches = []
    for name in names:
        indices = [i for i, g in enumerate(groups) if g == name]
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        order += [order[i % len(order)] for i in range(-len(order) % size)]
        for start in range(0, len(order), size):
            megabatches.append(order[start : start + size])
    return [megabatches[i] for i in torch.randperm(len(megabatches), generator=generator).tolist()]


class ResumableSampler:
    """Each epoch as a sequence of global batches, the same whatever the world size, and this rank's
    micro-batches of them.

    A global batch is `global_batch_size` samples of one modality group. For one data file it is the
    official trainer's megabatch (LLaVA's `LengthGroupedSampler` with `world_size *
    gradient_accumulation_steps` ranks of `train_batch_size`), `modality_megabatches`; for a mixture
    (`data.sources`) it is one batch of one source, uniform over the sources or in the release's round robin
    (`owl2.data.mixture`). Its samples depend only on `(seed, epoch)`; the world size only decides how they are
    dealt out: `deal_to_ranks` gives each rank an equal share (longest first), which the rank cuts into
    `accumulation` micro-batches. So the data position is the number of global batches done, and a run
    resumed on another world size sees exactly the samples the uninterrupted run would have, step for step.
    """

    def __init__(
        self,
        lengths: list[int],
        config: TrainConfig,
        world_size: int,
        rank: int,
        groups: list[str] | None = None,
        mixture: tuple[list[Source], list[int]] | None = None,
    ):
        """Build the sampler.

        Args:
            lengths: `SupervisedDataset.lengths` (signed by modality).
            config: The training config: micro batch, global batch, seed, `data.group_by_modality`, `data.order`.
            world_size: Data-parallel ranks.
            rank: This rank, in `[0, world_size)`.
            groups: `SupervisedDataset.groups`; None: by the sign of `lengths`.
            mixture: `mixture_sources(...)`, to draw each batch from one source of a mixture.

        Raises:
            ConfigError: If the global batch does not split into micro-batches on `world_size` ranks, or
                exceeds the data set (or a source of the mixture, named).
        """
        self.lengths = list(lengths)
        self.groups = None if groups is None else list(groups)
        if not config.data.group_by_modality:
            self.lengths, self.groups = [abs(n) or 1 for n in lengths], None
        self.micro_batch_size, self.world_size, self.rank = config.micro_batch_size, world_size, rank
        self.global_batch_size = config.global_batch(world_size)
        self.accumulation = config.accumulation_steps(world_size)
        self.seed, self.order, self.mixture = config.seed, config.data.order, mixture
        if mixture is not None:
            small = [s for s in mixture[0] if s.size < self.global_batch_size]
            if small:
                raise ConfigError(
                    f"global_batch_size: {self.global_batch_size} exceeds {small[0].name}'s {small[0].size} samples; "
                    "every batch of a mixture comes from one source and one modality: give it more samples, or "
                    "move them into a data set of their own modality"
                )
        elif self.global_batch_size > len(self.lengths):
            raise ConfigError(f"global_batch_size: {self.global_batch_size} exceeds the {len(self.lengths)} samples "
                              "of one epoch")
        self._epoch: tuple[int, list[list[int]]] | None = None

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of `epoch`, as sample indices: a function of `(seed, epoch)` alone."""
        if self._epoch is None or self._epoch[0] != epoch:
            if self.mixture is not None:
                sources, index = self.mixture
                batches = mixture_batches(sources, self.global_batch_size, self.seed, epoch, self.order)
                batches = [[index[i] for i in batch] for batch in batches]
            else:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                batches = modality_megabatches(self.lengths, self.global_batch_size, generator, self.groups)
            self._epoch = epoch, batches
        return self._epoch[1]

    def batches_per_epoch(self) -> int:
        """Global batches (optimizer steps) in one epoch (the same every epoch)."""
        return len(self.global_batches(0))

    def micro_batches(self, epoch: int, start: int = 0) -> list[list[int]]:
        """This rank's micro-batches of `epoch` from global batch `start` on: `accumulation` per global batch."""
        micro = []
        for batch in self.global_batches(epoch)[start:]:
            share = deal_to_ranks(batch, self.lengths, self.world_size)[self.rank]
            micro += [share[i : i + self.micro_batch_size] for i in range(0, len(share), self.micro_batch_size)]
        return micro
