"""`owl2 demo --recipe onellm`: the toy OneLLM through its whole recipe on CPU (paper section 3.3; no official
counterpart).

    synthetic data of every modality -> I image-text alignment -> II video, audio, point -> III imu
    -> IV unified instruction tuning -> held-out answers and captions after every stage -> report

Every stage is a run of `owl2.train.run` with `configs/train/onellm-demo-*.yaml`, the trainer and config format
of cluster runs; the demo fills in output folders, seed, data sources and modalities. Stages II and III start each
new modality from the image's projection parts (Image Init) and draw every global batch from one data set,
uniformly over the data of every modality aligned so far (`sampler="uniform"`, the paper's recipe); with
`sampler="sequential"` each stage sees its new modalities only, the baseline the paper's claim is measured against.

The toy has no pretrained CLIP and no pretrained LLaMA-2. Its stage I therefore trains the toy CLIP and the toy
LLM too, together with the image's projection parts, on image captions and on the captions of every modality as
plain text (standing in for CLIP's image pretraining and the LLM's language pretraining: a frozen LLM that never
saw the word "beep" cannot be taught to say it by a projection alone). It starts from `write_toy_init`: the toy
at random but for its CLIP's position table, a 2-D sin-cos one as large as a pretrained CLIP's, without which the
UPM cannot tell where anything is. From stage II on both stay frozen, as the paper's do: the encoder each modality
is aligned to is an image encoder, trained on images only.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from owl2.demo.run import REPO, answer_file, train_stage

CONFIGS = REPO / "configs" / "train"
STAGE_CONFIGS = {
    "image": CONFIGS / "onellm-demo-image.yaml",
    "align": CONFIGS / "onellm-demo-align.yaml",
    "instruct": CONFIGS / "onellm-demo-instruct.yaml",
}
MODEL_CONFIG = REPO / "configs" / "model" / "onellm-toy.json"
SAMPLERS = ("uniform", "sequential")
"""How stages II and III draw their data: from every modality aligned so far, or from the new ones only."""
TEXT_PROMPT = "describe ."
"""The user turn of the plain-text captions of stage I."""
POSITION_SCALE = 4.0
"""The toy CLIP's initial position table: MAE's 2-D sin-cos table times this (see `write_toy_init`)."""


@dataclass
class OneLLMDemoSettings:
    """Sizes of one demo run; `quick()` is the CI-sized variant."""

    progressive: tuple[tuple[str, ...], ...] = (("video", "audio", "point"), ("imu",))
    """The modalities aligned in each stage after image-text alignment (the paper's stage II, then III)."""
    steps: dict[str, int] = field(default_factory=lambda: {"image": 4000, "align": 1000, "instruct": 2500})
    """Optimizer steps of stage I, of each progressive stage, and of instruction tuning."""
    new_repeat: int = 2
    """Passes an epoch over the data of the modalities a progressive stage adds (`repeat` of their sources): with
    the uniform sampler, a new modality gets twice an earlier one's batches."""
    records: int = 1200
    """Training records per modality and split (align, instruct)."""
    heldout: int = 60
    """Held-out questions (and captions) per modality, its question types in turn."""
    text_only: int = 60
    """Held-out text-only questions."""
    text_records: int = 1200
    """Text-only instructions in instruction tuning."""
    micro_batch_size: int | None = None
    """Samples per optimizer step (None: the configs' value)."""
    batch_size: int = 64
    """Questions per generation batch."""
    sheet_size: int = 8
    """Held-out examples on each modality's picture sheet."""
    sampler: str = "uniform"
    """`uniform` (the paper's) or `sequential` (each stage on its new modalities only)."""
    model_config: Path = MODEL_CONFIG
    """The OneLLM preset stage I builds (and whose sizes the data is written at)."""

    @classmethod
    def quick(cls) -> "OneLLMDemoSettings":
        """A run of a minute or two on two cores, through every stage, that still learns something measurable."""
        return cls(steps={"image": 40, "align": 20, "instruct": 40}, records=64, heldout=10, text_only=10,
                   text_records=64, micro_batch_size=8, sheet_size=4)  # fmt: skip

    @property
    def modalities(self) -> tuple[str, ...]:
        """Every modality the run trains, in the order they are added."""
        return ("image", *(m for group in self.progressive for m in group))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def write_data(data_dir: Path, seed: int, settings: OneLLMDemoSettings) -> dict[str, Path]:
    """The synthetic set of every modality at the toy's sizes, plus stage I's plain-text captions and the
    text-only instructions and questions."""
    from owl2.config import OneLLMConfig
    from owl2.data.synthetic import text_instruction
    from owl2.data.synthetic_onellm import write_synthetic_onellm_dataset
    from owl2.processing.media import OneLLMMediaProcessor

    media = OneLLMMediaProcessor.from_model_config(OneLLMConfig.from_json_file(settings.model_config)).config
    paths = write_synthetic_onellm_dataset(data_dir, seed=seed, media_config=media, num_per_modality=settings.records,
                                           num_heldout=settings.heldout, modalities=settings.modalities)  # fmt: skip
    captions = [r["caption"] for m in settings.modalities for r in _records(paths[f"{m}_align"])]
    random.Random(f"{seed}-text-corpus").shuffle(captions)
    paths["text_corpus"] = _write_jsonl(data_dir / "text_corpus.jsonl", [
        {"id": f"text-corpus-{i}", "conversations": [{"from": "human", "value": TEXT_PROMPT}, {"from": "gpt", "value": c}]}
        for i, c in enumerate(captions)
    ])  # fmt: skip
    rng = random.Random(f"{seed}-text-instruct")
    instruct = []
    for i in range(settings.text_records):
        question, answer, _ = text_instruction(rng)
        instruct.append({"id": f"text-{i}", "conversations": [{"from": "human", "value": question},
                                                               {"from": "gpt", "value": answer}]})  # fmt: skip
    paths["text_instruct"] = _write_jsonl(data_dir / "text_instruct.jsonl", instruct)
    rng = random.Random(f"{seed}-text-heldout")
    questions = [dict(zip(("question", "answer", "question_type"), text_instruction(rng))) for _ in range(settings.text_only)]
    paths["text_heldout"] = _write_jsonl(data_dir / "text_heldout.jsonl", [
        {"id": f"text-heldout-{i}", **q} for i, q in enumerate(questions)
    ])  # fmt: skip
    return paths


def write_toy_init(model_config: Path, out: Path, seed: int, scale: float = POSITION_SCALE) -> Path:
    """The model stage I starts from: the preset at random (as the trainer draws it for `seed`), except the toy
    CLIP's position table, set to MAE's 2-D sin-cos table times `scale` (rows of norm `scale * sqrt(W / 2)`).

    A pretrained CLIP's position table is large and spatially smooth; timm's N(0, 0.02) draws one 7% of the
    patch tokens' size, and training barely grows it. The UPM has no position encoding of its own: it reads its
    input tokens as a set, so from such features it cannot tell where a shape is. (A fresh toy UPM trained
    directly to name a shape's quadrant stays at chance on the features of a CLIP trained from the N(0, 0.02)
    table, and reaches 1.0 within 100 steps from the sin-cos one.) The release's CLIP is pretrained and frozen;
    this stands in for that part of its pretraining.
    """
    import torch

    from owl2.config import OneLLMConfig
    from owl2.models.abstractor import sincos_2d
    from owl2.models.onellm import OneLLMModel

    config = OneLLMConfig.from_json_file(model_config)
    torch.manual_seed(seed)  # the draw `owl2.train.build_model` makes for a fresh model
    model = OneLLMModel(config)
    vision = config.vision_config
    with torch.no_grad():
        clip = model.encoder.clip
        grid = vision.image_size // vision.patch_size
        clip.pos_embed[0] = scale * sincos_2d(clip.pos_embed.shape[-1], grid)  # (1 + grid**2, W)
    model.save_pretrained(out)
    return out


def _sources(files: list[Path], repeats: list[int] | None = None) -> str:
    """`data.sources` as a YAML override value."""
    repeats = repeats or [1] * len(files)
    return "[" + ", ".join(f"{{path: '{f}', repeat: {r}}}" for f, r in zip(files, repeats)) + "]"


def evaluate(model_dir: Path, paths: dict[str, Path], modalities: tuple[str, ...], out: Path, batch_size: int,
             template: str | None = None) -> dict:
    """Answer the held-out questions and caption the held-out inputs of `modalities`, and the text-only questions,
    prompted with `template` (the stage's `data.template`: `plain` in alignment; None: OneLLM's chat template).

    Returns:
        `accuracy_by_modality`, `caption_accuracy_by_modality` (exact match), `caption_cider_by_modality`,
        `text_only_accuracy` and, for the picture sheets, `answers` by id.
    """
    import torch

    from owl2.eval import read_references, score
    from owl2.eval.generation import load_pretrained

    model, processor = load_pretrained(model_dir, device="cpu", dtype=torch.float32, template=template)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"accuracy_by_modality": {}, "caption_accuracy_by_modality": {}, "caption_cider_by_modality": {},
                    "answers": {}}  # fmt: skip
    folder = paths["image_folder"]
    for modality in modalities:
        answers = answer_file(model, processor, paths[f"{modality}_heldout"], folder, out / f"{modality}_answers.jsonl",
                              batch_size, max_new_tokens=8)  # fmt: skip
        references, types = read_references(paths[f"{modality}_references"])
        result["accuracy_by_modality"][modality] = score(answers, references, types, metric="exact").overall
        captions = answer_file(model, processor, paths[f"{modality}_captions"], folder, out / f"{modality}_captions.jsonl",
                               batch_size, max_new_tokens=32)  # fmt: skip
        references, _ = read_references(paths[f"{modality}_caption_references"])
        result["caption_accuracy_by_modality"][modality] = score(captions, references, metric="exact").overall
        result["caption_cider_by_modality"][modality] = score(captions, references, metric="cider").overall
        result["answers"] |= answers
    answers = answer_file(model, processor, paths["text_heldout"], folder, out / "text_answers.jsonl", batch_size,
                          max_new_tokens=8)  # fmt: skip
    references, types = read_references(paths["text_heldout"])
    result["text_only_accuracy"] = score(answers, references, types, metric="exact").overall
    return result


def _forgetting(stages: list[dict], key: str) -> dict[str, float]:
    """Per modality, its best `key` after any stage before the last, minus its value after the last (>= 0: lost)."""
    final = stages[-1][key]
    best: dict[str, float] = {}
    for stage in stages[:-1]:
        for modality, value in stage[key].items():
            best[modality] = max(best.get(modality, value), value)
    return {m: round(best[m] - final[m], 6) for m in final if m in best}


def run_onellm_demo(out: str | Path, seed: int = 0, settings: OneLLMDemoSettings | None = None) -> dict:
    """Build the data, train every stage, answer the held-out questions after each, and write the report.

    Writes into `out`: `data/`, one training run per stage (`stage1-image/`, `stage2-align/`, ...; the trained
    model is the last one's `final/`), `eval/<stage>/` (every answer), `report.json`, `loss_curve.png` and a
    picture sheet per modality, `sheet_<modality>.png`.

    Args:
        out: The demo folder (created); it must not hold an earlier run's stage folders.
        seed: Seed of the data, the model init and the data order.
        settings: Sizes and the sampler (default: the full demo).

    Returns:
        The report (also in `report.json`).

    Raises:
        FileExistsError: If `out` already holds a stage folder.
        ValueError: For an unknown sampler.
    """
    import torch

    from owl2.demo.media_sheet import media_sheet
    from owl2.demo.report import plot_stages
    from owl2.eval import score

    settings = settings or OneLLMDemoSettings()
    if settings.sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {SAMPLERS}, got {settings.sampler!r}")
    out = Path(out)
    names = ["stage1-image", *(f"stage{k + 2}-{'-'.join(g)}" for k, g in enumerate(settings.progressive)),
             f"stage{len(settings.progressive) + 2}-instruct"]  # fmt: skip
    for name in names:
        if (out / name).exists():
            raise FileExistsError(f"{out / name}: already holds a training run; choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    paths = write_data(out / "data", seed, settings)
    wall = {"data": time.perf_counter() - started}

    common = [f"seed={seed}", f"data.image_folder={paths['image_folder']}", f"data.tokenizer={paths['tokenizer']}"]
    if settings.micro_batch_size is not None:
        common.append(f"micro_batch_size={settings.micro_batch_size}")
    init = write_toy_init(settings.model_config, out / "init", seed)
    # the text corpus holds every modality's captions: repeat the images to half of stage I's batches
    plan = [(names[0], "image", ("image",), [paths["image_align"], paths["text_corpus"]],
             [len(settings.modalities), 1], [f"init_from={init}"])]
    seen = ["image"]
    for name, group in zip(names[1:-1], settings.progressive):
        earlier = [paths[f"{m}_align"] for m in seen] if settings.sampler == "uniform" else []
        files = earlier + [paths[f"{m}_align"] for m in group]
        repeats = [1] * len(earlier) + [settings.new_repeat] * len(group)
        listed = ",".join(group)
        plan.append((name, "align", group, files, repeats, [f"modalities=[{listed}]", f"init_from_image=[{listed}]"]))
        seen += group
    instruct = [paths[f"{m}_instruct"] for m in seen] + [paths["text_instruct"]]
    plan.append((names[-1], "instruct", (), instruct, [1] * len(instruct), []))

    stages, metrics, model_dir, aligned = [], {}, None, []  # stage I's init_from is in its plan entry
    for name, kind, added, files, repeats, extra in plan:
        overrides = common + extra + [f"output_dir={out / name}", f"data.sources={_sources(files, repeats)}",
                                      f"max_steps={settings.steps[kind]}"]  # fmt: skip
        if model_dir is not None:
            overrides.append(f"init_from={model_dir}")
        t = time.perf_counter()
        model_dir, records = train_stage(STAGE_CONFIGS[kind], overrides)
        train_s = time.perf_counter() - t
        aligned += added
        t = time.perf_counter()
        template = yaml.safe_load((out / name / "config.yaml").read_text())["data"]["template"] or None  # the run's
        result = evaluate(model_dir, paths, tuple(aligned), out / "eval" / name, settings.batch_size, template)
        metrics[name] = records
        stages.append({"name": name, "added": list(added), "modalities": list(aligned),
                       "steps": records[-1]["step"] if records else 0,
                       "loss_first": records[0]["loss"] if records else None,
                       "loss_last": records[-1]["loss"] if records else None,
                       **{k: v for k, v in result.items() if k != "answers"},
                       "wall_time_s": {"train": train_s, "eval": time.perf_counter() - t}})  # fmt: skip
    answers = result["answers"]
    wall["total"] = time.perf_counter() - started

    plot_stages({s["name"]: metrics[s["name"]] for s in stages}, out / "loss_curve.png")
    sheets = {}
    for modality in settings.modalities:
        rows = _records(paths[f"{modality}_heldout"])[: settings.sheet_size]
        refs = {r["id"]: r["answer"] for r in _records(paths[f"{modality}_references"])}
        items = []
        for r in rows:
            value = r[modality]
            folder = paths["image_folder"]
            item_input = (folder / value[0], folder / value[1]) if isinstance(value, list) else folder / value
            reply = answers.get(r["id"], "")
            correct = score({r["id"]: reply}, {r["id"]: [refs[r["id"]]]}, metric="exact").overall == 1.0
            items.append({"input": item_input, "question": r["question"].split("\n", 1)[-1], "answer": refs[r["id"]],
                          "reply": reply, "correct": correct})  # fmt: skip
        sheets[modality] = f"sheet_{modality}.png"
        media_sheet(modality, items, out / sheets[modality])

    final = stages[-1]
    report = {
        "recipe": "onellm",
        "seed": seed,
        "sampler": settings.sampler,
        "stages": stages,
        "accuracy_by_modality": final["accuracy_by_modality"],
        "caption_accuracy_by_modality": final["caption_accuracy_by_modality"],
        "caption_cider_by_modality": final["caption_cider_by_modality"],
        "text_only_accuracy": final["text_only_accuracy"],
        "forgetting": _forgetting(stages, "accuracy_by_modality"),
        "alignment_caption_forgetting": _forgetting(stages[:-1], "caption_accuracy_by_modality"),
        "wall_time_s": wall["total"],
        "data_time_s": wall["data"],
        "torch_threads": torch.get_num_threads(),
        "model": str(model_dir),
        "files": {"loss_curve": "loss_curve.png", "picture_sheets": sheets},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def stage_table(report: dict) -> str:
    """The lines printed at the end: held-out accuracy of every modality after every stage, then the totals."""
    modalities = list(report["accuracy_by_modality"])
    lines = [f"{'after stage':<28}" + "".join(f"{m:>8}" for m in modalities) + f"{'text':>8}"]
    for stage in report["stages"]:
        cells = [stage["accuracy_by_modality"].get(m) for m in modalities]
        row = "".join(f"{'-':>8}" if v is None else f"{100 * v:>7.1f}%" for v in cells)
        lines.append(f"{stage['name']:<28}{row}{100 * stage['text_only_accuracy']:>7.1f}%")
    captions = report["caption_cider_by_modality"]
    lines.append(f"{'caption CIDEr (final)':<28}" + "".join(f"{captions[m]:>8.2f}" for m in modalities))
    lines.append(f"sampler: {report['sampler']}; wall time {report['wall_time_s']:.0f} s")
    return "\n".join(lines)
