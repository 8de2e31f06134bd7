"""`Owl2Processor`: a tokenizer plus `Owl2ImageProcessor` (official `mm_utils.py`
`tokenizer_image_token` and `process_images`, together).

It turns text with `<|image|>` placeholders (or a conversation, through a chat template) and the
images they stand for into the model's inputs: `input_ids` with `IMAGE_TOKEN_INDEX` once per image,
`attention_mask`, and `pixel_values` `(total_images, 3, H, W)` in order of appearance, row by row.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from owl2.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from owl2.processing.image import Owl2ImageProcessor
from owl2.processing.templates import ChatTemplate
from owl2.processing.tokenization import encode_conversation, encode_text


def pad_batch(
    sequences: list[list[int]], pad_value: int, padding_side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists into a `(B, T)` tensor and its attention mask.

    Args:
        sequences: One id list per sample.
        pad_value: Id written on padded positions.
        padding_side: `"right"` (training) or `"left"` (generation).

    Returns:
        `(ids, attention_mask)`, both `(B, T)` long tensors; the mask is 1 on real tokens.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if padding_side == "right" else slice(width - len(seq), width)
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


class Owl2Processor:
    """Tokenizer + image processor.

    Example:
        >>> processor = Owl2Processor(tokenizer, Owl2ImageProcessor(size=56))
        >>> batch = processor(text=["USER: <|image|> what color ? ASSISTANT:"], images=[image])
        >>> model.generate(**batch)
    """

    def __init__(self, tokenizer, image_processor: Owl2ImageProcessor, template: str | ChatTemplate = "mplug_owl2"):
        """Build the processor.

        Args:
            tokenizer: Any transformers tokenizer; its pad token (or else its unk token) pads.
            image_processor: The image half.
            template: Chat template for `apply_chat`.
        """
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template = template
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an unk token to pad with")
        self.pad_token_id = pad

    def _encode(self, text: str) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + encode_text(text, self.tokenizer)

    def _batch(
        self, sequences: list[list[int]], images: list[Image.Image] | None, padding_side: str
    ) -> dict[str, torch.Tensor | None]:
        images = list(images or [])
        placeholders = sum(seq.count(IMAGE_TOKEN_INDEX) for seq in sequences)
        if placeholders != len(images):
            raise ValueError(f"the text has {placeholders} {IMAGE_TOKEN_INDEX} placeholders but {len(images)} images were given")
        input_ids, attention_mask = pad_batch(sequences, self.pad_token_id, padding_side)
        pixel_values = self.image_processor(images) if images else None
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}

    def __call__(
        self,
        text: str | list[str],
        images: list[Image.Image] | Image.Image | None = None,
        padding_side: str = "left",
    ) -> dict[str, torch.Tensor | None]:
        """Tokenize prompts (already rendered) and preprocess their images.

        Args:
            text: A prompt or a batch of prompts; `<|image|>` marks each image.
            images: All images of the batch in order of appearance (row by row).
            padding_side: `"left"` for generation (default), `"right"` for training.

        Returns:
            `input_ids`, `attention_mask` `(B, T)` and `pixel_values` `(N, 3, H, W)` (None without images).

        Raises:
            ValueError: If the placeholder count differs from the image count.
        """
        texts = [text] if isinstance(text, str) else list(text)
        images = [images] if isinstance(images, Image.Image) else images
        return self._batch([self._encode(t) for t in texts], images, padding_side)

    def apply_chat(
        self,
        conversations: list[list[dict[str, str]]],
        images: list[Image.Image] | None = None,
        add_generation_prompt: bool = True,
        padding_side: str = "left",
    ) -> dict[str, torch.Tensor | None]:
        """Render conversations with the chat template (the one training used) and batch them.

        Args:
            conversations: One message list per sample (`{"role", "content"}`), each ending with a user turn
                when `add_generation_prompt` is set.
            images: All images of the batch in order of appearance.
            add_generation_prompt: End each prompt with the assistant prefix.
            padding_side: `"left"` for generation.

        Returns:
            As `__call__`, plus `labels` (`IGNORE_INDEX` outside replies; padded with it).
        """
        encoded = [
            encode_conversation(c, self.tokenizer, self.template, add_generation_prompt=add_generation_prompt)
            for c in conversations
        ]
        batch = self._batch([e.input_ids for e in encoded], images, padding_side)
        batch["labels"], _ = pad_batch([e.labels for e in encoded], IGNORE_INDEX, padding_side)
        return batch

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Decode generated ids to text, without special tokens."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return self.tokenizer.decode([i for i in ids if i >= 0], skip_special_tokens=True).strip()

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the tokenizer files and `preprocessor_config.json` into `directory`."""
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, template: str | ChatTemplate = "mplug_owl2") -> "Owl2Processor":
        """Load a tokenizer (with `AutoTokenizer`) and the image processor from one folder."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return cls(tokenizer, Owl2ImageProcessor.from_pretrained(directory), template=template)
