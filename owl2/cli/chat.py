"""`owl2 chat`: multi-turn chat in the terminal with streamed replies (official mPLUG-Owl2 `serve/cli.py`,
OneLLM `demos/cli.py`).

Differences from the official loops: any number of inputs of any modality the model takes, added at start
(`--image`, `--audio`, `--rgbd IMAGE MAP` ...) or between turns (`/image PATH`, `/audio PATH`,
`/rgbd IMAGE MAP` ...), each placed at the start of the next user message (a template with
`inputs_first`, OneLLM's, moves them after BOS, where its release put them); `/reset` starts over; greedy
decoding unless `--temperature` is set; a bad file is reported and the chat goes on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from owl2.cli.main import UsageError
from owl2.constants import ONELLM_MODALITIES
from owl2.data.checks import PAIRED_MODALITIES

HELP = (
    "commands: /image PATH, /video PATH, /audio PATH, /point PATH, /imu PATH, /fmri PATH, /rgbd IMAGE MAP, "
    "/rgbn IMAGE MAP (attach to the next message), /reset (forget everything), /quit"
)
"""Printed at start and on /help."""


def add_parser(subparsers) -> None:
    """Register `owl2 chat`."""
    parser = subparsers.add_parser(
        "chat",
        help="chat with a model in the terminal (streamed replies, /image, /audio ..., /reset)",
        description=f"Multi-turn chat with a saved model of either family. {HELP}. End with /quit or Ctrl-D.",
    )
    parser.add_argument("--model", type=Path, required=True, help="model folder (weights, tokenizer, processor)")
    for modality in ONELLM_MODALITIES:
        if modality in PAIRED_MODALITIES:
            parser.add_argument(
                f"--{modality}", type=Path, nargs=2, action="append", default=[], metavar=("IMAGE", "MAP"),
                help=f"an RGB image and its {'depth' if modality == 'rgbd' else 'normal'} map for the first message (repeatable)",
            )  # fmt: skip
        else:
            parser.add_argument(
                f"--{modality}", type=Path, action="append", default=[], help=f"{modality} file for the first message (repeatable)"
            )  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per reply (default 256)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default)")
    parser.add_argument("--template", default=None, help="chat template name (default: the one the model family was trained with)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    parser.set_defaults(func=run_chat)


class Session:
    """The conversation so far and the inputs waiting for the next user message."""

    def __init__(self, model, processor, max_new_tokens: int, temperature: float):
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.reset()

    def reset(self) -> None:
        """Forget the messages and every input."""
        self.messages: list[dict[str, str]] = []
        self.inputs: dict[str, list] = {}  # every input of the conversation, by modality, in order
        self.pending: list[str] = []  # modalities of the inputs not yet placed in a user message

    def add(self, modality: str, path: Path | tuple[Path, Path]) -> None:
        """Load an input for the next message.

        Raises:
            ValueError: If the model takes no such modality, or the file is missing or unreadable.
        """
        item = self.processor.load(modality, path)
        self.inputs.setdefault(modality, []).append(item)
        self.pending.append(modality)

    def reply(self, text: str, out=None) -> str:
        """Add a user message, stream the reply to `out` (default: stdout), and return it.

        On an error (say, the conversation outgrew the model's context) the message is taken back and the
        inputs it carried wait for the next one.
        """
        from owl2.processing.templates import PLACEHOLDERS

        content = "".join(PLACEHOLDERS[m] for m in self.pending) + ("\n" if self.pending else "") + text
        self.messages.append({"role": "user", "content": content})
        try:
            answer = self._generate(out or sys.stdout)
        except Exception:
            self.messages.pop()
            raise
        self.pending = []
        self.messages.append({"role": "assistant", "content": answer})
        return answer

    def _generate(self, out) -> str:
        import torch
        from transformers import TextStreamer

        from owl2.eval.generation import model_inputs, new_tokens

        batch = self.processor.apply_chat([self.messages], inputs=self.inputs)
        inputs = model_inputs(batch, self.model)
        streamer = TextStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        streamer.on_finalized_text = lambda chunk, stream_end=False: print(chunk, end="" if not stream_end else "\n", file=out, flush=True)
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                streamer=streamer,
                **self.processor.generation_kwargs(),
                **sampling,
            )
        ids = new_tokens(output, inputs["input_ids"].shape[1], self.processor.tokenizer.eos_token_id)[0]
        return self.processor.decode(ids)


def attach_command(session: Session, line: str) -> str:
    """Run `/MODALITY PATH` (`/rgbd IMAGE MAP`) and say what happened; errors are reported, not raised."""
    modality, *paths = line[1:].split()
    wanted = 2 if modality in PAIRED_MODALITIES else 1
    if len(paths) != wanted:
        return f"usage: /{modality} {'IMAGE MAP' if wanted == 2 else 'PATH'}"
    files = tuple(Path(p).expanduser() for p in paths)
    try:
        session.add(modality, files if wanted == 2 else files[0])
    except ValueError as e:
        return f"error: {e}"
    return f"({modality} {' '.join(paths)} attached to your next message)"


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
    for modality in ONELLM_MODALITIES:
        for path in getattr(args, modality):
            # a bad --image (or --audio ...) is a usage error: ValueError -> one line, status 2
            session.add(modality, tuple(path) if modality in PAIRED_MODALITIES else path)
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
        elif line.split()[0][1:] in ONELLM_MODALITIES:
            print(attach_command(session, line))
        elif line.startswith("/"):
            print(f"unknown command {line.split()[0]}; {HELP}")
        else:
            print("ASSISTANT: ", end="", flush=True)
            try:
                session.reply(line)
            except ValueError as e:  # e.g. the conversation outgrew the model's context
                print(f"\nerror: {e}")
    return 0
