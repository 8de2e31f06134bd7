"""Supervised data set and collator (official `train.py` `LazySupervisedDataset` and
`DataCollatorForSupervisedDataset`).

Both families share them: the processor (`Owl2Processor`, `OneLLMProcessor`) decides the placeholders, the
chat template and how each modality's files become tensors (OneLLM's `data/pretrain_dataset.py` and
`data/fintune_dataset.py` load one modality per data set; here a record may hold inputs of several).

Differences from the official code: records may have several inputs (or none; the official code
feeds a zero image to text-only samples, here they simply have none); bad records are validated
with `owl2.data.checks` and either skipped and counted or reported with their reason, never
replaced by a random other sample; truncation happens at turn boundaries counting each input's
real token cost, and the collator never cuts a padded batch (which could cut a placeholder).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from owl2.constants import IGNORE_INDEX
from owl2.data.checks import record_inputs, record_messages, validate_record
from owl2.data.records import RecordError, RecordFile
from owl2.processing.processor import MultimodalProcessor, model_argument, pad_batch
from owl2.processing.templates import PLACEHOLDERS
from owl2.processing.tokenization import IMAGE_ONLY, TruncationError, encode_conversation, truncate

ON_ERROR = ("skip", "stop")
"""Policies for a bad record: skip it and count it, or stop with its reason."""


TEXT_GROUP = "text"
"""The modality group of a sample without inputs."""


def modality_group(modalities) -> str:
    """The group a sample is batched in: its inputs' modalities in `PLACEHOLDERS` order joined by "+"
    ("image", "audio+video"), or `TEXT_GROUP`. Under ZeRO-3 every rank of a step must run the same encoders."""
    present = [m for m in PLACEHOLDERS if m in modalities]
    return "+".join(present) if present else TEXT_GROUP


class SupervisedDataset(Dataset):
    """LLaVA-style records (conversations, captions, text-only) as token ids, labels and inputs of any modality.

    `__getitem__` returns `{"input_ids", "labels", "inputs"}`: 1-D long tensors and the record's inputs
    encoded by the processor, modality -> `(N, ...)` tensor (e.g. `"image"` -> `(N, 3, H, W)`; empty for a
    text-only record); or None for a bad record under the `"skip"` policy. `Collator` drops the Nones.

    Example:
        >>> processor = Owl2Processor(tokenizer, Owl2ImageProcessor(56))
        >>> ds = SupervisedDataset("data/stage2.jsonl", processor, image_folder="data/images",
        ...                        tokens_per_input=config.num_image_tokens)
        >>> loader = DataLoader(ds, batch_size=8, collate_fn=Collator.for_processor(processor))
    """

    def __init__(
        self,
        data_path: str | Path,
        processor: MultimodalProcessor,
        image_folder: str | Path | None = None,
        max_length: int = 2048,
        tokens_per_input: int = 65,
        on_error: str = "skip",
    ):
        """Index the data file (records are parsed and inputs loaded only when asked for).

        Args:
            data_path: A `.json` (array) or `.jsonl` file.
            processor: The family's processor: its tokenizer (with an EOS token), its chat template (the same
                one must be used at inference), its placeholders and its file loaders.
            image_folder: Folder the records' input paths are relative to.
            max_length: Limit in LLM tokens after input expansion; longer samples are cut after a
                complete exchange, or are bad records if their first exchange does not fit.
            tokens_per_input: LLM tokens per input (`Owl2Config.num_image_tokens`,
                `OneLLMConfig.num_tokens_per_input`).
            on_error: `"skip"` or `"stop"`.

        Raises:
            DataFileError: If the file cannot be read at all.
        """
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.records = RecordFile(data_path)
        self.processor = processor
        self.image_folder = image_folder
        self.max_length = max_length
        self.tokens_per_input = tokens_per_input
        self.on_error = on_error
        self.skipped: dict[int, str] = {}
        """Index -> `location: reason` of every record skipped so far (in this process)."""
        self._estimates: list[tuple[int, str]] | None = None

    @property
    def num_skipped(self) -> int:
        """Records skipped so far in this process (each DataLoader worker counts its own)."""
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict | None:
        try:
            return self._load(index)
        except RecordError as e:
            if self.on_error == "stop":
                raise RecordError(f"{self.records.path}: {e.location}", e.reason) from None
            self.skipped[index] = str(e)
            return None

    def _load(self, index: int) -> dict:
        location = self.records.location(index)
        processor = self.processor
        sample = validate_record(self.records[index], location, self.image_folder, load=False)
        unknown = [m for m in sample.inputs if m not in processor.placeholders]
        if unknown:
            raise RecordError(location, f"{', '.join(unknown)} inputs, but this model takes only "
                                        f"{', '.join(processor.placeholders)}")
        encoded = encode_conversation(sample.messages, processor.tokenizer, processor.template,
                                      placeholders=processor.placeholders)
        ids = processor.placeholders
        try:
            encoded = truncate(encoded, self.max_length, self.tokens_per_input, tuple(ids.values()))
        except TruncationError as e:
            raise RecordError(location, str(e)) from None
        inputs = {}
        try:
            for modality, paths in sample.inputs.items():
                kept = encoded.input_ids.count(ids[modality])  # a modality's first inputs survive truncation
                if kept:
                    names = sample.input_names[modality]
                    loaded = [processor.load_file(modality, path, name) for path, name in zip(paths[:kept], names)]
                    inputs[modality] = processor.encode_modality(modality, loaded)
        except ValueError as e:
            raise RecordError(location, str(e)) from None
        return {
            "input_ids": torch.tensor(encoded.input_ids, dtype=torch.long),
            "labels": torch.tensor(encoded.labels, dtype=torch.long),
            "inputs": inputs,
        }

    def _estimate(self, index: int) -> tuple[int, str]:
        try:
            record = self.records[index]
            words = sum(len(m["content"].split()) for m in record_messages(record))
            inputs = record_inputs(record)
        except (RecordError, ValueError):
            return 1, TEXT_GROUP
        return words + sum(map(len, inputs.values())) * self.tokens_per_input, modality_group(inputs)

    def _estimated(self) -> list[tuple[int, str]]:
        if self._estimates is None:
            self._estimates = [self._estimate(i) for i in range(len(self))]
        return self._estimates

    @property
    def lengths(self) -> list[int]:
        """Approximate length of each sample (words + input tokens), without loading any input.

        Like the official `modality_lengths`: positive for samples with inputs, negative for
        text-only ones, as `LengthGroupedSampler` expects. Computed once (reads every record).
        """
        return [n if group != TEXT_GROUP else -n for n, group in self._estimated()]

    @property
    def groups(self) -> list[str]:
        """Each sample's `modality_group` (read with `lengths`, once)."""
        return [group for _, group in self._estimated()]


class ConcatDataset(Dataset):
    """Several `SupervisedDataset`s laid end to end (a mixture's sources, in order), with their lengths and groups."""

    def __init__(self, datasets: list[SupervisedDataset]):
        if not datasets:
            raise ValueError("ConcatDataset needs at least one data set")
        self.datasets = list(datasets)
        self.offsets = [0]
        for dataset in self.datasets:
            self.offsets.append(self.offsets[-1] + len(dataset))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> dict | None:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside the {len(self)} samples")
        k = next(k for k in range(len(self.datasets)) if index < self.offsets[k + 1])
        return self.datasets[k][index - self.offsets[k]]

    @property
    def lengths(self) -> list[int]:
        return [n for dataset in self.datasets for n in dataset.lengths]

    @property
    def groups(self) -> list[str]:
        return [g for dataset in self.datasets for g in dataset.groups]

    @property
    def sizes(self) -> list[int]:
        """Samples of each data set, in order."""
        return [len(dataset) for dataset in self.datasets]

    @property
    def num_skipped(self) -> int:
        return sum(dataset.num_skipped for dataset in self.datasets)


@dataclass
class Collator:
    """Pads samples into the model's batch (right padding, for training).

    Returns `input_ids`, `attention_mask`, `labels` `(B, T)` and, under `inputs_name`, the inputs of every
    sample concatenated per modality in row-major order of appearance, as the model takes them
    (`model_argument`: mPLUG-Owl2's `pixel_values` `(total_images, 3, H, W)`, OneLLM's `modality_inputs`
    dict); None if the batch has no input. Samples that are None (skipped bad records) are dropped; if all
    are, the batch is None.
    """

    pad_token_id: int
    """Id written on padded `input_ids` positions (labels are padded with IGNORE_INDEX)."""
    padding_side: str = "right"
    """`"right"` for training."""
    placeholders: Mapping[str, int] = field(default_factory=lambda: dict(IMAGE_ONLY))
    """The family's modalities and placeholder ids (`MultimodalProcessor.placeholders`)."""
    inputs_name: str = "pixel_values"
    """The model's argument for the inputs (`MultimodalProcessor.inputs_name`)."""

    @classmethod
    def for_processor(cls, processor: MultimodalProcessor, padding_side: str = "right") -> Collator:
        """The collator of a family's processor."""
        return cls(processor.pad_token_id, padding_side, dict(processor.placeholders), processor.inputs_name)

    def __call__(self, samples: list[dict | None]) -> dict | None:
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        input_ids, attention_mask = pad_batch([s["input_ids"].tolist() for s in samples], self.pad_token_id, self.padding_side)
        labels, _ = pad_batch([s["labels"].tolist() for s in samples], IGNORE_INDEX, self.padding_side)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                self.inputs_name: collate_inputs(samples, input_ids, self.placeholders)}  # fmt: skip


def collate_inputs(samples: list[dict], input_ids: torch.Tensor, placeholders: Mapping[str, int]):
    """The samples' inputs concatenated per modality, as the model's argument (`model_argument`), after checking
    each modality's count against its placeholders in the batch's `input_ids`."""
    by_modality = {}
    for modality, index in placeholders.items():
        parts = [s["inputs"][modality] for s in samples if modality in s["inputs"]]
        given = sum(part.shape[0] for part in parts)
        expected = int((input_ids == index).sum())
        if given != expected:  # a broken sample, not bad user input
            raise AssertionError(f"batch has {expected} {PLACEHOLDERS[modality]} placeholders but {given} inputs")
        if parts:
            by_modality[modality] = torch.cat(parts)
    return model_argument(by_modality, placeholders)
