"""The built-in synthetic data set: coloured shapes drawn with Pillow, in the LLaVA format.

No official counterpart: it stands in for the official pre-training captions and instruction data
so that the toy model trains and is scored offline on a CPU. Each image holds one to three shapes,
each of a different colour and a different kind, in different quadrants, on a plain background.
Stage 1 pairs images with captions. Stage 2 asks questions of five types (colour, shape, count,
position, yes/no; balanced unless `question_cycle` weights them) with one- or two-word answers
and, as the paper's joint instruction tuning mixes in captioning and text-only data, also holds
"describe the image" instructions and text-only ones. The held-out split has one question per
image and records its type for per-type accuracy.

Everything is a pure function of the seed: the same seed writes the same bytes.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from owl2.processing.templates import IMAGE_PLACEHOLDER, TEMPLATES

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 20),
    "purple": (140, 40, 180),
    "orange": (250, 140, 0),
}
"""Shape colours by name; far apart so 56-pixel images keep them distinct."""
SHAPES = ("circle", "square", "triangle")
"""Shape kinds."""
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (230, 230, 230), (245, 240, 225))
"""Background colours (near-white, so every shape colour stands out)."""
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
"""Quadrant names, by quadrant index: top left, top right, bottom left, bottom right."""
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""Number words (counts and text-only arithmetic)."""
QUESTION_TYPES = ("color", "shape", "count", "position", "yesno")
"""Question types; the held-out split draws them in turn so it stays balanced, and so does stage 2 by default."""
TEXT_ONLY_TYPES = ("plus", "minus", "opposite")
"""Kinds of text-only instructions mixed into stage 2."""
DESCRIBE = "describe the image ."
"""The stage-2 captioning instruction; its answer is the image's caption, as stage 1 writes it."""
OPPOSITES = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "yes": "no", "no": "yes"}
"""Word pairs for the text-only 'opposite' instruction."""


@dataclass(frozen=True)
class Shape:
    """One drawn shape."""

    color: str
    kind: str
    position: str


def draw_scene(rng: random.Random, image_size: int) -> tuple[Image.Image, list[Shape]]:
    """Draw one image of 1-3 shapes with distinct colours, kinds and quadrants.

    Args:
        rng: Source of randomness (consumed deterministically).
        image_size: Side of the square image in pixels.

    Returns:
        The RGB image and its shapes, ordered by quadrant (top left first).
    """
    count = rng.randint(1, 3)
    colors = rng.sample(sorted(COLORS), count)
    kinds = rng.sample(SHAPES, count)
    quadrants = sorted(rng.sample(range(4), count))
    image = Image.new("RGB", (image_size, image_size), rng.choice(BACKGROUNDS))
    draw = ImageDraw.Draw(image)
    half = image_size // 2
    shapes = []
    for color, kind, quadrant in zip(colors, kinds, quadrants):
        side = rng.randint(int(half * 0.75), int(half * 0.95))
        x0 = (quadrant % 2) * half + rng.randint(0, half - side)
        y0 = (quadrant // 2) * half + rng.randint(0, half - side)
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        draw_shape(draw, kind, box, COLORS[color])
        shapes.append(Shape(color, kind, POSITIONS[quadrant]))
    return image, shapes


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill) -> None:
    """Draw a circle, square or triangle (apex up) filling `box` (x0, y0, x1, y1, inclusive)."""
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1 + 1) // 2, y0), (x0, y1), (x1, y1)], fill=fill)


def caption(shapes: list[Shape]) -> str:
    """Stage-1 caption listing every shape with its colour and place, by kind: circles, squares, triangles.

    In this order, writing a caption takes the lookups the questions ask for: the colour and the place of an
    object found by its kind. A caption in quadrant order can be written by reading place after place, and
    the demo's models trained on it learnt those lookups late or, on some seeds, not at all
    (`docs/demo-experiments.md`).
    """
    parts = [f"a {s.color} {s.kind} at the {s.position}" for s in sorted(shapes, key=lambda s: SHAPES.index(s.kind))]
    noun = "shape" if len(shapes) == 1 else "shapes"
    return f"{NUMBERS[len(shapes)]} {noun} : " + " , ".join(parts) + " ."


def ask(rng: random.Random, shapes: list[Shape], qtype: str) -> tuple[str, str]:
    """One question of type `qtype` about the scene, and its one- or two-word answer."""
    target = rng.choice(shapes)
    if qtype == "color":
        return f"what color is the {target.kind} ?", target.color
    if qtype == "shape":
        return f"what shape is the {target.color} object ?", target.kind
    if qtype == "count":
        return "how many shapes are there ?", NUMBERS[len(shapes)]
    if qtype == "position":
        return f"where is the {target.color} {target.kind} ?", target.position
    if rng.random() < 0.5:  # yes/no, balanced: half about a shape present, half about one absent
        return f"is there a {target.color} {target.kind} ?", "yes"
    present = {(s.color, s.kind) for s in shapes}
    absent = [(c, k) for c in sorted(COLORS) for k in SHAPES if (c, k) not in present]
    color, kind = rng.choice(absent)
    return f"is there a {color} {kind} ?", "no"


def text_instruction(rng: random.Random) -> tuple[str, str, str]:
    """A text-only instruction, its answer and its kind."""
    kind = rng.choice(TEXT_ONLY_TYPES)
    if kind == "plus":
        a = rng.randint(0, 9)
        b = rng.randint(0, 9 - a)
        return f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?", NUMBERS[a + b], kind
    if kind == "minus":
        a = rng.randint(0, 9)
        b = rng.randint(0, a)
        return f"what is {NUMBERS[a]} minus {NUMBERS[b]} ?", NUMBERS[a - b], kind
    word = rng.choice(sorted(OPPOSITES))
    return f"what is the opposite of {word} ?", OPPOSITES[word], kind


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def write_synthetic_dataset(
    out_dir: str | Path,
    seed: int = 0,
    num_stage1: int = 2000,
    num_stage2: int = 3000,
    num_heldout: int = 250,
    image_size: int = 56,
    turns_per_record: int = 2,
    text_only_fraction: float = 0.1,
    caption_fraction: float = 0.4,
    question_cycle: tuple[str, ...] = QUESTION_TYPES,
) -> dict[str, Path]:
    """Write the synthetic data set in the LLaVA format, with its images and tokenizer.

    Writes `stage1.jsonl` (caption records: `id`, `image`, `caption`), `stage2.jsonl` (conversation
    records: `id`, `image`, `conversations`; text-only ones have no `image`), `heldout.jsonl`
    (one question per image, plus `question_type` and `answer`), `images/*.png` and `tokenizer/`.

    Args:
        out_dir: Folder to write into (created if missing).
        seed: Everything written is a function of it.
        num_stage1: Caption records.
        num_stage2: Conversation records (text-only ones included).
        num_heldout: Held-out records, on images not used for training.
        image_size: Side of the images; the processor's size avoids any resampling.
        turns_per_record: Question/answer exchanges per stage-2 image record.
        text_only_fraction: Share of stage-2 records without an image.
        caption_fraction: Share of stage-2 records that ask for the caption (`DESCRIBE`). Captions name
            every shape with its colour and place, a denser signal than one answer word; on the toy
            model, in plain-loop runs, they lifted held-out accuracy after 2,000 steps from 0.62 to 0.72-0.74.
        question_cycle: Types of the stage-2 questions, asked in turn; repeat a type to ask it more often.
            Its length must share no factor with `turns_per_record`. The held-out split stays balanced.

    Returns:
        Paths by name: `stage1`, `stage2`, `heldout`, `images`, `tokenizer`.

    Raises:
        ValueError: If `question_cycle` is empty, names a type not in `QUESTION_TYPES`, or its length shares a
            factor with `turns_per_record`.
    """
    if not question_cycle or not set(question_cycle) <= set(QUESTION_TYPES):
        raise ValueError(f"question_cycle: expected types from {QUESTION_TYPES}, got {tuple(question_cycle)}")
    if math.gcd(len(question_cycle), turns_per_record) != 1:
        # a cycle of 4 over 2 turns would ask its 2nd and 4th types only in second turns, never next to the image
        raise ValueError(f"question_cycle: its length ({len(question_cycle)}) must share no factor with "
                         f"turns_per_record ({turns_per_record}), so that every type comes in every turn")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    # one independent stream per split, so changing one split's size leaves the others unchanged
    streams = {name: random.Random(f"{seed}-{name}") for name in ("stage1", "stage2", "heldout")}

    def new_image(split: str, index: int) -> tuple[str, list[Shape]]:
        image, shapes = draw_scene(streams[split], image_size)
        name = f"{split}_{index:06d}.png"
        image.save(images / name, format="PNG")
        return name, shapes

    stage1 = []
    for i in range(num_stage1):
        name, shapes = new_image("stage1", i)
        stage1.append({"id": f"stage1-{i}", "image": name, "caption": caption(shapes)})

    stage2 = []
    rng = streams["stage2"]
    qturn = 0
    for i in range(num_stage2):
        draw = rng.random()  # which kind of record: text-only, caption, or questions
        if draw < text_only_fraction:
            question, answer, _ = text_instruction(rng)
            conversations = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
            stage2.append({"id": f"stage2-{i}", "conversations": conversations})
            continue
        name, shapes = new_image("stage2", i)
        if draw < text_only_fraction + caption_fraction:
            conversations = [{"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{DESCRIBE}"},
                             {"from": "gpt", "value": caption(shapes)}]
            stage2.append({"id": f"stage2-{i}", "image": name, "conversations": conversations})
            continue
        conversations = []
        for t in range(turns_per_record):
            question, answer = ask(rng, shapes, question_cycle[qturn % len(question_cycle)])
            qturn += 1
            if t == 0:
                question = f"{IMAGE_PLACEHOLDER}\n{question}"
            conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        stage2.append({"id": f"stage2-{i}", "image": name, "conversations": conversations})

    heldout = []
    for i in range(num_heldout):
        name, shapes = new_image("heldout", i)
        qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        question, answer = ask(streams["heldout"], shapes, qtype)
        conversations = [
            {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}"},
            {"from": "gpt", "value": answer},
        ]
        heldout.append(
            {"id": f"heldout-{i}", "image": name, "conversations": conversations, "question_type": qtype, "answer": answer}
        )

    paths = {"stage1": out / "stage1.jsonl", "stage2": out / "stage2.jsonl", "heldout": out / "heldout.jsonl"}
    write_jsonl(paths["stage1"], stage1)
    write_jsonl(paths["stage2"], stage2)
    write_jsonl(paths["heldout"], heldout)
    paths["images"] = images
    paths["tokenizer"] = out / "tokenizer"
    build_synthetic_tokenizer().save_pretrained(paths["tokenizer"])
    return paths


VOCABULARY_TEMPLATES = ("mplug_owl2", "vicuna_v1", "plain")
"""The templates whose words the synthetic tokenizer knows: fixed, so that adding a template to `TEMPLATES`
changes neither the vocabulary nor the demo's figures."""


def synthetic_vocabulary() -> list[str]:
    """Every word the synthetic data and the chat templates can produce, in a fixed order."""
    texts = [" ".join(COLORS), " ".join(SHAPES), " ".join(POSITIONS), " ".join(NUMBERS), " ".join(OPPOSITES)]
    texts += [
        "a shapes at the : , . what color is shape object how many are there where yes no plus minus opposite of",
    ]
    for name in VOCABULARY_TEMPLATES:
        template = TEMPLATES[name]
        texts += [template.system, template.user_prefix, template.assistant_prefix]
    # a few common words so hand-written prompts in the demo mostly tokenize
    texts += ["describe the image please this picture and or in it ? !"]
    pre = pre_tokenizers.Whitespace()
    words: list[str] = []
    for text in texts:
        for word, _ in pre.pre_tokenize_str(text.lower()):
            if word not in words:
                words.append(word)
    return words


def build_synthetic_tokenizer(words: list[str] | None = None):
    """A word-level tokenizer for the synthetic data, as a transformers `PreTrainedTokenizerFast`.

    Ids 0 `<unk>` (also the pad token), 1 `<s>`, 2 `</s>`, then `words` (default: `synthetic_vocabulary()`).
    Text is lower-cased and split on whitespace and punctuation; encoding adds `<s>` in front, as
    LLaMA's tokenizer does.
    """
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials + (synthetic_vocabulary() if words is None else words))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    tokenizer.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
