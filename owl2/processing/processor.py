"""Processors: a tokenizer plus what turns a family's inputs into tensors (official mPLUG-Owl2 `mm_utils.py`
`tokenizer_image_token` and `process_images`; OneLLM's loaders in `data/`).

`MultimodalProcessor` is what both families share: text with placeholders (`<|image|>`, `<|audio|>` ...;
or a conversation, through a chat template) becomes `input_ids` with one placeholder id per input and an
`attention_mask`; the inputs they stand for, given per modality in order of appearance, row by row, are
checked against the placeholders and handed to the family's `encode_inputs`. `Owl2Processor` returns
`pixel_values`; `OneLLMProcessor` returns `modality_inputs`, one tensor per modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from owl2.constants import IGNORE_INDEX, ONELLM_MODALITY_TOKEN_INDEX
from owl2.processing.image import Owl2ImageProcessor
from owl2.processing.image_file import load_image
from owl2.processing.templates import PLACEHOLDERS, ChatTemplate, get_template
from owl2.processing.tokenization import IMAGE_ONLY, encode_conversation, encode_text

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


def batch_to(batch: Mapping[str, Any], device: torch.device | str, float_dtype: torch.dtype | None = None) -> dict:
    """A processor's or collator's batch on `device`: every tensor, and each tensor of a dict by modality (OneLLM's
    `modality_inputs`), moved; floating ones also cast to `float_dtype` if given; None kept."""

    def move(value):
        if isinstance(value, Mapping):
            return {key: move(item) for key, item in value.items()}
        if value is None:
            return None
        if float_dtype is not None and value.is_floating_point():
            return value.to(device, float_dtype)
        return value.to(device)

    return {key: move(value) for key, value in batch.items()}


class MultimodalProcessor:
    """Tokenizer + a family's input encoding: the text side both families share.

    A subclass sets `placeholders` (modality -> placeholder id), `inputs_name` (the model's argument),
    `load_file` and `encode_modality`.
    """

    placeholders: Mapping[str, int] = IMAGE_ONLY
    """The family's modalities and their placeholder ids."""
    inputs_name: str = "pixel_values"
    """The model's forward argument the encoded inputs go to."""
    default_template: str = "mplug_owl2"
    """The chat template the family's release was trained with."""

    def __init__(self, tokenizer, inputs_processor: Any, template: str | ChatTemplate | None = None):
        """Build the processor.

        Args:
            tokenizer: Any transformers tokenizer; its pad token (or else its unk token) pads.
            inputs_processor: The family's files-to-tensors half, with `save_pretrained` / `from_pretrained`.
            template: Chat template for `apply_chat`, and where generated replies stop (default: the family's).
        """
        self.tokenizer = tokenizer
        self.inputs_processor = inputs_processor
        self.template = get_template(template or self.default_template)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an unk token to pad with")
        self.pad_token_id = pad

    @classmethod
    def inputs_processor_class(cls) -> type:
        """The class of the family's inputs processor (imported when asked, to keep imports light)."""
        raise NotImplementedError

    def encode_modality(self, modality: str, items: list) -> torch.Tensor:
        """One modality's inputs (decoded, in order of appearance) -> their tensor, `(N, ...)`."""
        raise NotImplementedError

    def encode_inputs(self, inputs: Mapping[str, list]) -> torch.Tensor | dict[str, torch.Tensor]:
        """Inputs per modality (each a non-empty list, in order of appearance) -> the model's argument."""
        return model_argument({m: self.encode_modality(m, items) for m, items in inputs.items()}, self.placeholders)

    def load_file(self, modality: str, path: Any, name: Any = None) -> Any:
        """Read one input file of a modality of this family into what `encode_inputs` takes; errors call it
        `name` (how a data record wrote it) if given."""
        raise NotImplementedError

    def load(self, modality: str, path: Any) -> Any:
        """Read one input file (a pair of them for rgbd / rgbn) into what `encode_inputs` takes.

        Raises:
            ValueError: This model has no such modality, or the file is missing or unreadable, naming it.
        """
        self._refuse_unknown([modality])
        return self.load_file(modality, path)

    def _refuse_unknown(self, modalities) -> None:
        unknown = sorted(set(modalities) - set(self.placeholders))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} inputs were given, but this model takes only {', '.join(self.placeholders)}")

    def _encode(self, text: str) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + encode_text(text, self.tokenizer, self.placeholders)

    def _batch(self, sequences: list[list[int]], inputs: dict[str, list], padding_side: str) -> dict:
        self._refuse_unknown(inputs)
        for modality, index in self.placeholders.items():
            count, given = sum(seq.count(index) for seq in sequences), len(inputs.get(modality, ()))
            if count != given:
                raise ValueError(
                    f"the text has {count} {PLACEHOLDERS[modality]} placeholders but {given} {modality} inputs were given"
                )
        input_ids, attention_mask = pad_batch(sequences, self.pad_token_id, padding_side)
        present = {modality: items for modality, items in inputs.items() if items}
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            self.inputs_name: self.encode_inputs(present) if present else None,
        }

    def __call__(
        self,
        text: str | list[str],
        inputs: Mapping[str, Sequence] | None = None,
        padding_side: str = "left",
        **by_modality: Sequence,
    ) -> dict:
        """Tokenize prompts (already rendered) and encode their inputs.

        Args:
            text: A prompt or a batch of prompts; each placeholder (`<|image|>`, `<|audio|>` ...) marks one input.
            inputs: Modality -> its inputs of the whole batch, in order of appearance (row by row).
            padding_side: `"left"` for generation (default), `"right"` for training.
            by_modality: The same as keywords, e.g. `images=[...]`, `audio=[...]` (a plural `s` is dropped).

        Returns:
            `input_ids`, `attention_mask` `(B, T)` and the family's encoded inputs (None without any).

        Raises:
            ValueError: A modality's placeholder count differs from its number of inputs, naming both.
        """
        texts = [text] if isinstance(text, str) else list(text)
        return self._batch([self._encode(t) for t in texts], _merge_inputs(inputs, by_modality), padding_side)

    def apply_chat(
        self,
        conversations: list[list[dict[str, str]]],
        inputs: Mapping[str, Sequence] | None = None,
        add_generation_prompt: bool = True,
        padding_side: str = "left",
        **by_modality: Sequence,
    ) -> dict:
        """Render conversations with the chat template (the one training used) and batch them.

        Args:
            conversations: One message list per sample (`{"role", "content"}`), each ending with a user turn
                when `add_generation_prompt` is set.
            inputs: Modality -> its inputs of the whole batch, in order of appearance.
            add_generation_prompt: End each prompt with the assistant prefix.
            padding_side: `"left"` for generation.
            by_modality: Inputs as keywords, as for `__call__`.

        Returns:
            As `__call__`, plus `labels` (`IGNORE_INDEX` outside replies; padded with it).
        """
        encoded = [
            encode_conversation(
                c, self.tokenizer, self.template, add_generation_prompt=add_generation_prompt, placeholders=self.placeholders
            )
            for c in conversations
        ]
        batch = self._batch([e.input_ids for e in encoded], _merge_inputs(inputs, by_modality), padding_side)
        batch["labels"], _ = pad_batch([e.labels for e in encoded], IGNORE_INDEX, padding_side)
        return batch

    def generation_kwargs(self) -> dict[str, Any]:
        """What `generate` needs to end replies where this template does (padding, EOS, a stop text); fresh per call."""
        kwargs: dict[str, Any] = {"pad_token_id": self.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        if self.template.stop:
            from transformers import StoppingCriteriaList

            from owl2.processing.stopping import StopOnText

            kwargs["stopping_criteria"] = StoppingCriteriaList([StopOnText(self.tokenizer, self.template.stop)])
        return kwargs

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the tokenizer files and the inputs processor's config into `directory`."""
        self.tokenizer.save_pretrained(str(directory))
        self.inputs_processor.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, template: str | ChatTemplate | None = None) -> MultimodalProcessor:
        """Load the tokenizer (with `AutoTokenizer`) and the inputs processor from one folder."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return cls(tokenizer, cls.inputs_processor_class().from_pretrained(directory), template=template)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Decode generated ids to text, without special tokens, cut where the template's replies stop."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        text = self.tokenizer.decode([i for i in ids if i >= 0], skip_special_tokens=True)
        if self.template.stop:
            text = text.split(self.template.stop)[0]
        return text.strip()


def model_argument(
    by_modality: Mapping[str, torch.Tensor], placeholders: Mapping[str, int]
) -> torch.Tensor | dict[str, torch.Tensor] | None:
    """Encoded inputs per modality -> the model's argument: a family of one modality (mPLUG-Owl2's image) takes
    its tensor (`pixel_values`), a family of several a dict by modality (`modality_inputs`); None without any."""
    if not by_modality:
        return None
    if len(placeholders) == 1:
        (modality,) = placeholders
        return by_modality[modality]
    return dict(by_modality)


def _merge_inputs(inputs: Mapping[str, Sequence] | None, by_modality: Mapping[str, Sequence]) -> dict[str, list]:
    """`inputs` plus keyword inputs (`images=` -> "image"); a single PIL image stands for a list of one."""
    merged = dict(inputs or {})
    for key, items in by_modality.items():
        singular = key.removesuffix("s")
        modality = singular if singular in PLACEHOLDERS else key
        if modality not in PLACEHOLDERS:
            raise TypeError(f"unexpected keyword {key!r}; expected inputs of one of {', '.join(PLACEHOLDERS)}")
        merged[modality] = items
    return {
        m: [items] if isinstance(items, Image.Image) else list(items) for m, items in merged.items() if items is not None
    }


class Owl2Processor(MultimodalProcessor):
    """Tokenizer + image processor, for `Owl2Model`; its files are the tokenizer's and `preprocessor_config.json`.

    Example:
        >>> processor = Owl2Processor(tokenizer, Owl2ImageProcessor(size=56))
        >>> batch = processor(text=["USER: <|image|> what color ? ASSISTANT:"], images=[image])
        >>> model.generate(**batch)
    """

    @property
    def image_processor(self) -> Owl2ImageProcessor:
        """The image half."""
        return self.inputs_processor

    @classmethod
    def inputs_processor_class(cls) -> type:
        return Owl2ImageProcessor

    def encode_modality(self, modality: str, items: list) -> torch.Tensor:
        return self.image_processor(items)  # (N, 3, H, W)

    def load_file(self, modality: str, path: str | Path, name: str | None = None) -> Image.Image:
        return load_image(Path(path), name)


class OneLLMProcessor(MultimodalProcessor):
    """Tokenizer + OneLLM's media loaders, for `OneLLMModel`: any of the eight modalities in one prompt; its files
    are the tokenizer's and `media_config.json`.

    Example:
        >>> processor = OneLLMProcessor(tokenizer, OneLLMMediaProcessor.from_model_config(model.config))
        >>> batch = processor.apply_chat([[{"role": "user", "content": "<|audio|> What is this sound?"}]],
        ...                              audio=["dog.wav"])
        >>> model.generate(**batch, **processor.generation_kwargs())
    """

    placeholders = ONELLM_MODALITY_TOKEN_INDEX
    inputs_name = "modality_inputs"
    default_template = "onellm"

    @property
    def media_processor(self):
        """The `OneLLMMediaProcessor`: files to tensors."""
        return self.inputs_processor

    @classmethod
    def inputs_processor_class(cls) -> type:
        from owl2.processing.media import OneLLMMediaProcessor  # torch and numpy loaders: only when used

        return OneLLMMediaProcessor

    def encode_modality(self, modality: str, items: list) -> torch.Tensor:
        return self.media_processor(modality, items)  # shapes: `owl2.models.onellm`

    def load_file(self, modality: str, path: Any, name: Any = None) -> torch.Tensor:
        return self.media_processor.load(modality, path)  # its errors name the file by its path
