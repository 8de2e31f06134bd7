"""`owl2 chat`: multi-turn chat in the terminal with streamed replies (official `serve/cli.py`).

Differences from the official loop: any number of images, added at start (`--image`) or between
turns (`/image PATH`), each placed at the start of the next user message; `/reset` starts over;
greedy decoding unless `--temperature` is set; a bad image is reported and the chat goes on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from owl2.cli.main import UsageError

HELP = "commands: /image PATH (attach to the next message), /reset (forget everything), /quit"
"""Printed at start and on /help."""


def add_parser(subparsers) -> None:
    """Register `owl2 chat`."""
    parser = subparsers.add_parser(
        "chat",
        help="chat with a model in the terminal (streamed replies, /image, /reset)",
        description=f"Multi-turn chat with a saved model. {HELP}. End with /quit or Ctrl-D.",
    )
    parser.add_argument("--model", type=Path, required=True, help="model folder (weights, tokenizer, image processor)")
    parser.add_argument("--image", type=Path, action="append", default=[], help="image for the first message (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per reply (default 256)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default)")
    parser.add_argument("--template", default="mplug_owl2", help="chat template name (default mplug_owl2)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    parser.set_defaults(func=run_chat)


class Session:
    """The conversation so far and the images waiting for the next user message."""

    def __init__(self, model, processor, max_new_tokens: int, temperature: float):
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.reset()

    def reset(self) -> None:
        """Forget the messages and every image."""
        self.messages: list[dict[str, str]] = []
        self.images: list = []  # every image of the conversation, in order
        self.pending = 0  # images not yet placed in a user message

    def add_image(self, path: Path) -> None:
        """Load an image for the next message.

        Raises:
            ValueError: If the file is missing or not a readable image.
        """
        from owl2.data.checks import load_image

        self.images.append(load_image(Path(path)))
        self.pending += 1

    def reply(self, text: str, out=sys.stdout) -> str:
        """Add a user message, stream the reply to `out`, and return it."""
        import torch
        from transformers import TextStreamer

        from owl2.processing import IMAGE_PLACEHOLDER

        content = IMAGE_PLACEHOLDER * self.pending + ("\n" if self.pending else "") + text
        self.messages.append({"role": "user", "content": content})
        self.pending = 0
        batch = self.processor.apply_chat([self.messages], images=self.images or None)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels" and v is not None}
        streamer = TextStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        streamer.on_finalized_text = lambda chunk, stream_end=False: print(chunk, end="" if not stream_end else "\n", file=out, flush=True)
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.processor.pad_token_id,
                eos_token_id=self.processor.tokenizer.eos_token_id,
                streamer=streamer,
                **sampling,
            )
        from owl2.eval.generation import new_tokens

        ids = new_tokens(output, inputs["input_ids"].shape[1], self.processor.tokenizer.eos_token_id)[0]
        answer = self.processor.decode(ids)
        self.messages.append({"role": "assistant", "content": answer})
        return answer


def run_chat(args: argparse.Namespace) -> int:
    """Read user lines from stdin until /quit or end of input; 0 on a normal end."""
    from owl2.eval.inputs import check_model_folder

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    check_model_folder(args.model)  # bad input is reported before torch is imported

    from transformers.utils import logging as hf_logging

    from owl2.cli.generate import pick_device
    from owl2.eval.generation import load_pretrained

    hf_logging.disable_progress_bar()
    model, processor = load_pretrained(args.model, device=pick_device(args.device), template=args.template)
    session = Session(model, processor, args.max_new_tokens, args.temperature)
    for path in args.image:
        session.add_image(path)  # a bad --image is a usage error: ValueError -> one line, status 2
    interactive = sys.stdin.isatty()
    print(HELP, file=sys.stderr)
    while True:
        try:
            line = input("USER: " if interactive else "")
        except EOFError:
            break
        if not interactive:
            print(f"USER: {line}")  # echo piped input so a transcript reads like a session
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/help":
            print(HELP)
        elif line == "/reset":
            session.reset()
            print("(conversation cleared)")
        elif line.startswith("/image"):
            path = line[len("/image") :].strip()
            if not path:
                print("usage: /image PATH")
                continue
            try:
                session.add_image(Path(path).expanduser())
                print(f"(image {path} attached to your next message)")
            except ValueError as e:
                print(f"error: {e}")
        elif line.startswith("/"):
            print(f"unknown command {line.split()[0]}; {HELP}")
        else:
            print("ASSISTANT: ", end="", flush=True)
            try:
                session.reply(line)
            except ValueError as e:  # e.g. the conversation outgrew the model's context
                session.messages.pop()
                print(f"\nerror: {e}")
    return 0
