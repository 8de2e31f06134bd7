"""The synthetic data set and its tokenizer."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from owl2.data.synthetic import (
    COLORS, DESCRIBE, QUESTION_TYPES, SHAPES, Shape, build_synthetic_tokenizer, caption, write_synthetic_dataset,
)  # fmt: skip


def all_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    sizes = dict(num_stage1=6, num_stage2=8, num_heldout=5)
    write_synthetic_dataset(tmp_path / "a", seed=3, **sizes)
    write_synthetic_dataset(tmp_path / "b", seed=3, **sizes)
    write_synthetic_dataset(tmp_path / "c", seed=4, **sizes)
    a, b, c = all_bytes(tmp_path / "a"), all_bytes(tmp_path / "b"), all_bytes(tmp_path / "c")
    assert a == b
    assert all(a[k] != c[k] for k in ("stage1.jsonl", "stage2.jsonl", "heldout.jsonl", "images/stage1_000000.png"))
    assert a["tokenizer/tokenizer.json"] == c["tokenizer/tokenizer.json"]


def test_layout_and_records(synthetic):
    stage1 = [json.loads(line) for line in synthetic["stage1"].read_text().splitlines()]
    stage2 = [json.loads(line) for line in synthetic["stage2"].read_text().splitlines()]
    heldout = [json.loads(line) for line in synthetic["heldout"].read_text().splitlines()]
    assert (len(stage1), len(stage2), len(heldout)) == (20, 40, 25)
    assert set(stage1[0]) == {"id", "image", "caption"} and stage1[0]["caption"].split()[1] in ("shape", "shapes")
    assert any("image" not in r for r in stage2) and any("image" in r for r in stage2)  # text-only mixed in
    describe = [r for r in stage2 if r["conversations"][0]["value"] == f"<|image|>\n{DESCRIBE}"]
    assert describe  # captioning mixed in, as in the paper's instruction tuning
    for record in stage2 + heldout:
        convs = record["conversations"]
        assert [c["from"] for c in convs] == ["human", "gpt"] * (len(convs) // 2)
        assert sum(c["value"].count("<|image|>") for c in convs) == (1 if "image" in record else 0)
        if record in describe:
            assert len(convs) == 2 and convs[1]["value"].split()[1] in ("shape", "shapes")  # the caption
        else:
            assert all(1 <= len(c["value"].split()) <= 2 for c in convs[1::2])  # short answers
    assert Counter(r["question_type"] for r in heldout) == {t: 5 for t in QUESTION_TYPES}
    assert all(r["answer"] == r["conversations"][1]["value"] for r in heldout)
    train_images = {r["image"] for r in stage1 + stage2 if "image" in r}
    assert not train_images & {r["image"] for r in heldout}


def test_captions_list_the_shapes_by_kind(synthetic):
    scene = [Shape("red", "triangle", "top left"), Shape("blue", "circle", "bottom right")]  # quadrant order
    assert caption(scene) == "two shapes : a blue circle at the bottom right , a red triangle at the top left ."
    for line in synthetic["stage1"].read_text().splitlines():
        kinds = [word for word in json.loads(line)["caption"].split() if word in SHAPES]
        assert kinds == sorted(kinds, key=SHAPES.index)


def test_question_cycle_sets_the_training_mix(tmp_path):
    prefixes = {"what color": "color", "what shape": "shape", "how many": "count", "where is": "position", "is there": "yesno"}
    cycle = ("color", "shape", "color")
    paths = write_synthetic_dataset(tmp_path, num_stage1=1, num_stage2=60, num_heldout=10, text_only_fraction=0.0,
                                    caption_fraction=0.0, question_cycle=cycle)  # fmt: skip
    questions = [c["value"].split("\n")[-1] for line in paths["stage2"].read_text().splitlines()
                 for c in json.loads(line)["conversations"][::2]]  # fmt: skip
    asked = [next(t for p, t in prefixes.items() if q.startswith(p)) for q in questions]
    assert asked == [cycle[i % len(cycle)] for i in range(len(asked))]
    heldout = [json.loads(line)["question_type"] for line in paths["heldout"].read_text().splitlines()]
    assert Counter(heldout) == {t: 2 for t in QUESTION_TYPES}  # scored on every type alike
    with pytest.raises(ValueError, match="question_cycle.*'colour'"):
        write_synthetic_dataset(tmp_path / "bad", question_cycle=("colour",))
    with pytest.raises(ValueError, match="share no factor with turns_per_record"):  # shape only ever a 2nd question
        write_synthetic_dataset(tmp_path / "bad", question_cycle=("color", "shape"), turns_per_record=2)


def test_images_show_the_named_colours(synthetic):
    record = json.loads(synthetic["stage1"].read_text().splitlines()[0])
    image = Image.open(synthetic["images"] / record["image"])
    assert image.size == (56, 56) and image.mode == "RGB"
    pixels = {tuple(p) for p in np.asarray(image).reshape(-1, 3)}
    named = [c for c in COLORS if f" {c} " in record["caption"]]
    assert named and all(COLORS[c] in pixels for c in named)
    assert not any(COLORS[c] in pixels for c in COLORS if c not in named)


def test_tokenizer_covers_the_data(synthetic, tokenizer):
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2, 0)
    assert len(tokenizer) < 512 and len(tokenizer) == len(build_synthetic_tokenizer())
    assert tokenizer("what color ?")["input_ids"][0] == 1
    for split in ("stage1", "stage2", "heldout"):
        for line in synthetic[split].read_text().splitlines():
            record = json.loads(line)
            texts = [c["value"] for c in record.get("conversations", [])] + [record.get("caption", "")]
            for text in texts:
                ids = tokenizer(text.replace("<|image|>", ""), add_special_tokens=False)["input_ids"]
                assert 0 not in ids, text
    for template_text in ("USER: ASSISTANT:", "A chat between a curious user and an artificial intelligence assistant."):
        assert 0 not in tokenizer(template_text)["input_ids"]
