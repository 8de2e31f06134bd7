"""StopOnText: a row stops once its generated text holds the stop text, whatever the prompt held."""

from __future__ import annotations

import torch

from owl2.data.synthetic import build_synthetic_tokenizer
from owl2.processing.stopping import StopOnText


def test_rows_stop_once_their_new_text_holds_the_stop_text_and_the_prompt_does_not_count():
    tokenizer = build_synthetic_tokenizer()
    (red, blue, circle, what) = (tokenizer.convert_tokens_to_ids(w) for w in ("red", "blue", "circle", "what"))
    stop = StopOnText(tokenizer, "blue circle", window=4)
    prompt = torch.tensor([[blue, circle, what], [blue, circle, what]])  # the prompt holds the stop text
    step1 = torch.cat([prompt, torch.tensor([[red], [blue]])], dim=1)
    assert stop(step1, None).tolist() == [False, False]
    step2 = torch.cat([step1, torch.tensor([[red], [circle]])], dim=1)  # row 1 now generated "blue circle"
    assert stop(step2, None).tolist() == [False, True]
