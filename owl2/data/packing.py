"""Packed batches: several samples back to back in one row, instead of one padded row each.

`Owl2Model` reads a packed row from its attention mask, which numbers the samples 1, 2, 3, ...
(0 for the padding at the end): attention is blocked between samples, positions restart for each,
and the loss equals the padded batch's. Less padding means more useful tokens per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from owl2.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from owl2.data.dataset import collate_inputs
from owl2.processing.tokenization import IMAGE_ONLY


def expanded_length(input_ids: torch.Tensor, num_image_tokens: int) -> int:
    """LLM tokens a sample occupies once each image placeholder becomes its tokens."""
    return len(input_ids) + int((input_ids == IMAGE_TOKEN_INDEX).sum()) * (num_image_tokens - 1)


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing bin packing: sample indices per row, each row's lengths summing to <= capacity.

    A sample longer than `capacity` gets a row of its own.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(capacity - lengths[index])
    return [sorted(row) for row in rows]


@dataclass
class PackingCollator:
    """Packs a batch of samples (from `SupervisedDataset`) into as few rows as fit `max_tokens` each.

    Returns `input_ids`, `labels`, `attention_mask` (sample numbers, see the module docstring)
    `(R, T)` and `pixel_values` in row-major order of appearance (None without images). Samples
    that are None (skipped bad records) are dropped; if all are, the batch is None.
    """

    pad_token_id: int
    """Id written on the padding at the end of each row."""
    max_tokens: int
    """Capacity of a row in LLM tokens, counting each image as `num_image_tokens`."""
    num_image_tokens: int
    """LLM tokens per image (`Owl2Config.num_image_tokens`)."""

    def __call__(self, samples: list[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor | None] | None:
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        lengths = [expanded_length(s["input_ids"], self.num_image_tokens) for s in samples]
        rows = [[samples[i] for i in row] for row in pack(lengths, self.max_tokens)]
        width = max(sum(len(s["input_ids"]) for s in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        attention_mask = torch.zeros_like(input_ids)
        for r, row in enumerate(rows):
            offset = 0
            for number, sample in enumerate(row, start=1):
                n = len(sample["input_ids"])
                input_ids[r, offset : offset + n] = sample["input_ids"]
                labels[r, offset : offset + n] = sample["labels"]
                attention_mask[r, offset : offset + n] = number
                offset += n
        ordered = [sample for row in rows for sample in row]  # the inputs in the packed rows' order
        pixel_values = collate_inputs(ordered, input_ids, IMAGE_ONLY)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values}
