"""Supervised data set and collator (official `train.py` `LazySupervisedDataset` and
`DataCollatorForSupervisedDataset`).

Differences from the official code: records may have several images (or none; the official code
feeds a zero image to text-only samples, here they simply have none); bad records are validated
with `owl2.data.checks` and either skipped and counted or reported with their reason, never
replaced by a random other sample; truncation happens at turn boundaries counting each image's
real token cost, and the collator never cuts a padded batch (which could cut a placeholder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from owl2.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from owl2.data.checks import load_image, record_image_names, record_messages, validate_record
from owl2.data.records import RecordError, RecordFile
from owl2.processing.image import Owl2ImageProcessor
from owl2.processing.processor import pad_batch
from owl2.processing.templates import ChatTemplate, get_template
from owl2.processing.tokenization import TruncationError, encode_conversation, truncate

ON_ERROR = ("skip", "stop")
"""Policies for a bad record: skip it and count it, or stop with its reason."""


class SupervisedDataset(Dataset):
    """LLaVA-style records (conversations, captions, text-only) as token ids, labels and images.

    `__getitem__` returns `{"input_ids", "labels", "pixel_values"}` (1-D long tensors and a
    `(num_images, 3, H, W)` float tensor), or None for a bad record under the `"skip"` policy;
    `Collator` drops the Nones.

    Example:
        >>> ds = SupervisedDataset("data/stage2.jsonl", tokenizer, Owl2ImageProcessor(56),
        ...                        image_folder="data/images", num_image_tokens=config.num_image_tokens)
        >>> loader = DataLoader(ds, batch_size=8, collate_fn=Collator(tokenizer.pad_token_id, 56))
    """

    def __init__(
        self,
        data_path: str | Path,
        tokenizer,
        image_processor: Owl2ImageProcessor,
        image_folder: str | Path | None = None,
        template: str | ChatTemplate = "mplug_owl2",
        max_length: int = 2048,
        num_image_tokens: int = 65,
        on_error: str = "skip",
    ):
        """Index the data file (records are parsed and images loaded only when asked for).

        Args:
            data_path: A `.json` (array) or `.jsonl` file.
            tokenizer: Any transformers tokenizer with an EOS token.
            image_processor: Turns the record's images into pixel values.
            image_folder: Folder the records' image paths are relative to.
            template: Chat template (the same one must be used at inference).
            max_length: Limit in LLM tokens after image expansion; longer samples are cut after a
                complete exchange, or are bad records if their first exchange does not fit.
            num_image_tokens: LLM tokens per image (`Owl2Config.num_image_tokens`).
            on_error: `"skip"` or `"stop"`.

        Raises:
            DataFileError: If the file cannot be read at all.
        """
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.records = RecordFile(data_path)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_folder = image_folder
        self.template = get_template(template)
        self.max_length = max_length
        self.num_image_tokens = num_image_tokens
        self.on_error = on_error
        self.skipped: dict[int, str] = {}
        """Index -> `location: reason` of every record skipped so far (in this process)."""
        self._lengths: list[int] | None = None

    @property
    def num_skipped(self) -> int:
        """Records skipped so far in this process (each DataLoader worker counts its own)."""
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        try:
            return self._load(index)
        except RecordError as e:
            if self.on_error == "stop":
                raise RecordError(f"{self.records.path}: {e.location}", e.reason) from None
            self.skipped[index] = str(e)
            return None

    def _load(self, index: int) -> dict[str, torch.Tensor]:
        location = self.records.location(index)
        sample = validate_record(self.records[index], location, self.image_folder, load=False)
        encoded = encode_conversation(sample.messages, self.tokenizer, self.template)
        try:
            encoded = truncate(encoded, self.max_length, self.num_image_tokens)
        except TruncationError as e:
            raise RecordError(location, str(e)) from None
        try:
            kept = zip(sample.images[: encoded.num_images], sample.image_names)
            images = [load_image(path, name) for path, name in kept]
        except ValueError as e:
            raise RecordError(location, str(e)) from None
        return {
            "input_ids": torch.tensor(encoded.input_ids, dtype=torch.long),
            "labels": torch.tensor(encoded.labels, dtype=torch.long),
            "pixel_values": self.image_processor(images),
        }

    def _estimate(self, index: int) -> tuple[int, bool]:
        try:
            record = self.records[index]
            words = sum(len(m["content"].split()) for m in record_messages(record))
            images = len(record_image_names(record))
        except (RecordError, ValueError):
            return 1, False
        return words + images * self.num_image_tokens, images > 0

    @property
    def lengths(self) -> list[int]:
        """Approximate length of each sample (words + image tokens), without loading images.

        Like the official `modality_lengths`: positive for samples with images, negative for
        text-only ones, as `LengthGroupedSampler` expects. Computed once (reads every record).
        """
        if self._lengths is None:
            estimates = [self._estimate(i) for i in range(len(self))]
            self._lengths = [n if has_image else -n for n, has_image in estimates]
        return self._lengths


@dataclass
class Collator:
    """Pads samples into the model's batch (right padding, for training).

    Returns `input_ids`, `attention_mask`, `labels` `(B, T)` and `pixel_values`
    `(total_images, 3, H, W)` in row-major order of appearance (None if the batch has no image).
    Samples that are None (skipped bad records) are dropped; if all are, the batch is None.
    """

    pad_token_id: int
    """Id written on padded `input_ids` positions (labels are padded with IGNORE_INDEX)."""
    padding_side: str = "right"
    """`"right"` for training."""

    def __call__(self, samples: list[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor | None] | None:
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        input_ids, attention_mask = pad_batch([s["input_ids"].tolist() for s in samples], self.pad_token_id, self.padding_side)
        labels, _ = pad_batch([s["labels"].tolist() for s in samples], IGNORE_INDEX, self.padding_side)
        images = [s["pixel_values"] for s in samples if s["pixel_values"].shape[0] > 0]
        pixel_values = torch.cat(images) if images else None
        placeholders = int((input_ids == IMAGE_TOKEN_INDEX).sum())
        count = 0 if pixel_values is None else pixel_values.shape[0]
        if placeholders != count:  # a broken sample, not bad user input
            raise AssertionError(f"batch has {placeholders} image placeholders but {count} images")
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values}
