"""Conversation templates as data (official `mplug_owl2/conversation.py`).

The official code renders prompts with a `Conversation` class whose behaviour branches on a
`SeparatorStyle`, and its training and inference pick different defaults. Here a template is a
frozen record of strings; one renderer serves every template, and the same template object is
used to build training labels (`owl2.processing.tokenization`) and inference prompts.

A conversation is rendered as::

    system_prefix  user_prefix + text + user_suffix  assistant_prefix + reply + EOS  user_prefix ...

and a generation prompt stops after the last `assistant_prefix` (with its trailing space stripped,
as the official `"ASSISTANT:"`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

from owl2.constants import ONELLM_MODALITIES

PLACEHOLDERS = MappingProxyType({modality: f"<|{modality}|>" for modality in ONELLM_MODALITIES})
"""Modality name -> the text that marks where one input of it goes: `<|image|>`, `<|audio|>`, `<|point|>` ..."""

PLACEHOLDER_PATTERN = re.compile("|".join(re.escape(text) for text in PLACEHOLDERS.values()))
"""Matches any modality's placeholder."""

IMAGE_PLACEHOLDER = PLACEHOLDERS["image"]
"""Text that marks where an image goes (official mPLUG-Owl2 `DEFAULT_IMAGE_TOKEN`)."""

USER = "user"
"""Role name of the human turns (LLaVA records say `human`)."""
ASSISTANT = "assistant"
"""Role name of the model turns (LLaVA records say `gpt`)."""


@dataclass(frozen=True)
class ChatTemplate:
    """How one conversation turns into text.

    Example:
        >>> t = TEMPLATES["mplug_owl2"]
        >>> t.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
        'USER: Hi ASSISTANT: Hello</s>'
    """

    name: str
    """Key of the template in `TEMPLATES`."""
    system: str = ""
    """System prompt written once before the first turn; empty for none."""
    system_suffix: str = " "
    """Written after a non-empty system prompt."""
    user_prefix: str = "USER: "
    """Written before each user message."""
    user_suffix: str = " "
    """Written after each user message."""
    assistant_prefix: str = "ASSISTANT: "
    """Written before each assistant reply (the generation prompt ends here, right-stripped)."""
    eos: str = "</s>"
    """Text form of the end of a reply; in token form it is the tokenizer's EOS id."""
    reply_suffix: str = ""
    """Supervised text written after each reply, before `eos` (OneLLM's "\n###")."""
    eos_after_reply: bool = True
    """Whether each reply ends with the EOS token (supervised). OneLLM's release ends replies with
    `reply_suffix` instead, and puts one unsupervised EOS at the very end of a training sample."""
    continued_user_prefix: str | None = None
    """`user_prefix` of a user turn that follows a reply, when the reply's suffix already wrote part of it
    (OneLLM: " Human: ", the "###" being the reply's); None for `user_prefix` always."""
    stop: str = ""
    """Text at which a generated reply ends when no EOS comes (OneLLM's "###"); empty for EOS only."""
    inputs_first: bool = False
    """Move every placeholder of the user turns to the front, right after BOS and before the system
    prompt, in order: where OneLLM's release puts its modality block (`Transformer.forward`)."""

    def prefix_text(self) -> str:
        """Text before the first user turn (the system prompt and its separator, or nothing)."""
        return self.system + self.system_suffix if self.system else ""

    def user_prefix_at(self, turn: int) -> str:
        """The user prefix of message `turn` (0 for the first; a later user turn follows a reply)."""
        if turn > 0 and self.continued_user_prefix is not None:
            return self.continued_user_prefix
        return self.user_prefix

    def user_text(self, content: str, turn: int = 0) -> str:
        """Unsupervised text of one user turn (message `turn`), up to and including the assistant prefix (stripped)."""
        return self.user_prefix_at(turn) + content + self.user_suffix + self.assistant_prefix.rstrip()

    def reply_text(self, content: str) -> str:
        """Supervised text of one reply, without the EOS token."""
        return content + self.reply_suffix

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """Render a conversation to text (for display and logs; tokenization works turn by turn).

        Args:
            messages: Alternating `{"role": "user"|"assistant", "content": str}`, starting with a user.
            add_generation_prompt: End with the assistant prefix so a model continues with its reply.

        Returns:
            The prompt string.
        """
        validate_roles(messages)
        leading, messages = self.move_inputs_first(messages)
        text = leading + self.prefix_text()
        for turn, message in enumerate(messages):
            if message["role"] == USER:
                text += self.user_prefix_at(turn) + message["content"] + self.user_suffix
            else:
                text += self.assistant_prefix + self.reply_text(message["content"])
                text += self.eos if self.eos_after_reply else ""
        if add_generation_prompt:
            if messages and messages[-1]["role"] != USER:
                raise ValueError("add_generation_prompt needs a conversation that ends with a user turn")
            text += self.assistant_prefix.rstrip()
        return text

    def move_inputs_first(self, messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
        """With `inputs_first`, the placeholders of the user turns in order, and the messages without them.

        Without it, `("", messages)`.
        """
        if not self.inputs_first:
            return "", messages
        leading, moved = [], []
        for message in messages:
            if message["role"] == USER:
                leading += PLACEHOLDER_PATTERN.findall(message["content"])
                message = {**message, "content": PLACEHOLDER_PATTERN.sub("", message["content"]).strip()}
            moved.append(message)
        return "".join(leading), moved


def validate_roles(messages: list[dict[str, str]]) -> None:
    """Check that roles alternate user/assistant starting with user.

    Raises:
        ValueError: Naming the first message index that breaks the pattern.
    """
    for i, message in enumerate(messages):
        expected = USER if i % 2 == 0 else ASSISTANT
        if message.get("role") != expected:
            raise ValueError(f"message {i}: expected role {expected!r}, got {message.get('role')!r}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {i}: content must be a string, got {type(message.get('content')).__name__}")


TEMPLATES: dict[str, ChatTemplate] = {
    # official `conv_mplug_owl2` (SeparatorStyle.TWO_NO_SYS), the released model's default
    "mplug_owl2": ChatTemplate(name="mplug_owl2"),
    # official `conv_vicuna_v1` (SeparatorStyle.TWO)
    "vicuna_v1": ChatTemplate(
        name="vicuna_v1",
        system=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
    ),
    # official SeparatorStyle.PLAIN as used for caption pre-training: image, caption, EOS
    "plain": ChatTemplate(name="plain", user_prefix="", user_suffix="", assistant_prefix=""),
    # OneLLM's instruction tuning (`data/finetune_dataset.py`, `ConversationGenerator` with `conv_v1_2`): the
    # header, then "### Human: ...\n### Assistant: ...\n" per turn; a reply is supervised with the "\n###"
    # that follows it, and the modality block sits right after BOS. Its inference prompt (`get_prompt`)
    # writes "###Human: " instead, which training never showed the model; this is the training form.
    "onellm": ChatTemplate(
        name="onellm",
        system=(
            "A chat between a curious human and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the human's questions."
        ),
        system_suffix="\n\n",
        user_prefix="### Human: ",
        user_suffix="\n",
        assistant_prefix="### Assistant: ",
        reply_suffix="\n###",
        continued_user_prefix=" Human: ",
        eos_after_reply=False,
        stop="###",
        inputs_first=True,
    ),
}
"""Templates by name."""


def get_template(name: str | ChatTemplate) -> ChatTemplate:
    """Look a template up by name (a `ChatTemplate` passes through).

    Raises:
        KeyError: Listing the known names.
    """
    if isinstance(name, ChatTemplate):
        return name
    if name not in TEMPLATES:
        raise KeyError(f"unknown chat template {name!r}; expected one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
