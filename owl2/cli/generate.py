"""`owl2 generate`: answer a questions JSONL in batches (official `evaluate/evaluate_vqa.py`, the
generation half).

Answers are appended to `--output` one batch at a time and flushed, so an interrupted job loses at
most the batch in flight; running the command again skips the ids already answered. Each output
record has `id`, `question`, `answer` and the input's `image` and question type, if any, so the
output can be scored directly with `owl2 eval`.

Either family's model folder works. A record's inputs are keys named after their modality: `image`,
`video`, `audio`, `point`, `imu`, `fmri` (a path or a list), `rgbd`, `rgbn` (a pair `[image, map]`); a
question that does not write its placeholders (`<|audio|>` ...) gets them in front.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from owl2.cli.main import UsageError


def add_parser(subparsers) -> None:
    """Register `owl2 generate`."""
    parser = subparsers.add_parser(
        "generate",
        help="answer a JSONL of questions in batches (resumable)",
        description="Answer every question of a JSONL file with a saved model; re-running skips answered ids.",
    )
    parser.add_argument("--model", type=Path, required=True, help="model folder (weights, tokenizer, processor), either family")
    parser.add_argument(
        "--input", type=Path, required=True,
        help="JSONL of {id, question | text, [image | video | audio | point | imu | fmri | rgbd | rgbn]}",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, help="JSONL of {id, answer, ...}; appended to")
    parser.add_argument(
        "--image-folder", type=Path, default=None, help="folder input paths are relative to (default: the input's)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="questions per forward pass (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="most tokens per answer (default 16)")
    parser.add_argument(
        "--prompt-suffix", default="", help='text appended to each question, e.g. "Answer the question using a single word or phrase."'
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    parser.add_argument(
        "--compile", action="store_true",
        help="decode over a static cache with a torch.compile'd step (the first batches pay the compile time)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_generate)


def pick_device(name: str) -> str:
    """`auto` -> `cuda` when available, else `cpu`; any other name passes through."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def answered_ids(path: Path) -> set[str]:
    """Ids already in an output JSONL; a torn last line (from a killed run) is cut off the file.

    Raises:
        ValueError: Naming the line of a malformed record before the last one.
    """
    if not path.exists():
        return set()
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    done: set[str] = set()
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            record = json.loads(line)
            done.add(str(record["id"]))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            if number == len(lines):  # the write of the last record was cut short
                with open(path, "r+b") as f:
                    f.truncate(good_bytes)
                break
            raise ValueError(f"{path}:{number}: not an answer record; expected {{\"id\": ..., \"answer\": ...}}") from None
        good_bytes += len(line) + 1
    return done


def run_generate(args: argparse.Namespace) -> int:
    """Answer every question not yet in `--output`; 0 on success."""
    from owl2.eval.inputs import check_model_folder, read_questions

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.image_folder is not None and not args.image_folder.is_dir():
        raise UsageError(f"{args.image_folder}: no such image folder")
    check_model_folder(args.model)  # bad input is reported before torch is imported
    questions = read_questions(args.input, args.image_folder)
    done = answered_ids(args.output)
    todo = [q for q in questions if q.id not in done]
    if not todo:
        print(f"{args.output}: all {len(questions)} questions already answered", file=sys.stderr)
        return 0
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    from owl2.eval.generation import answer_batch, load_pretrained
    from owl2.processing.templates import PLACEHOLDER_PATTERN

    hf_logging.disable_progress_bar()  # the weight-loading bar of a small model is noise in a CLI
    model, processor = load_pretrained(args.model, device=pick_device(args.device))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "a", encoding="utf-8") as out, tqdm(
        total=len(questions), initial=len(questions) - len(todo), unit="q", desc="generate", disable=args.quiet
    ) as progress:
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start : start + args.batch_size]
            answers = answer_batch(model, processor, batch, args.max_new_tokens, args.prompt_suffix, args.compile)
            for question, answer in zip(batch, answers):
                text = PLACEHOLDER_PATTERN.sub("", question.text).strip()
                record = {"id": question.id, "question": text, "answer": answer, **question.extra}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            progress.update(len(batch))
    print(f"{args.output}: {len(todo)} answered, {len(done & {q.id for q in questions})} skipped", file=sys.stderr)
    return 0
