"""Where a generated reply ends when the template's replies end with text rather than EOS (OneLLM's "###").

transformers' own `stop_strings` precomputes, for every vocabulary entry, how it could overlap the stop string;
that assumes SentencePiece- or byte-level-style token strings and fails on others (a word-level tokenizer,
such as the synthetic data's). Decoding the last few new tokens of each row at each step works with any
tokenizer, at the cost of one small decode per row and step.
"""

from __future__ import annotations

import torch
from transformers import StoppingCriteria


class StopOnText(StoppingCriteria):
    """Stop each row once its generated text contains `stop`.

    Args:
        tokenizer: The tokenizer that decodes the ids.
        stop: The text a reply ends with.
        window: New tokens decoded per row and step: enough to hold `stop` split over several tokens.
    """

    def __init__(self, tokenizer, stop: str, window: int = 8):
        if not stop:
            raise ValueError("StopOnText needs a non-empty stop text")
        self.tokenizer, self.stop, self.window = tokenizer, stop, window
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        if self.prompt_length is None:  # the first call sees the prompt and one new token
            self.prompt_length = input_ids.shape[1] - 1
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:].clamp(min=0), skip_special_tokens=True)
        return torch.tensor([self.stop in tail for tail in tails], dtype=torch.bool, device=input_ids.device)
