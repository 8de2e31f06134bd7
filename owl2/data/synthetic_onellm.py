"""The built-in synthetic data for OneLLM's modalities, offline, in the LLaVA format, like the image set.

No official counterpart: it stands in for OneLLM's per-modality caption and instruction data (official
`data/pretrain_dataset.py`, `data/fintune_dataset.py`) so that the toy model trains and is scored on a CPU.
Per modality (one module each in `owl2.data.synthetic_media`):

    image   the image set's scenes, captions and questions (PNG)
    audio   one to three beeps, low or high, rising or falling chirps (16 kHz mono WAV)
    video   a coloured shape moving left, right, up or down, with a fading trail (64 x 64 mp4)
    point   a sphere, cube or cone surface in one colour (`.npy` (N, 6), N >= 1024)
    imu     still, walking or turning (`.npy` (6, T) at `imu_rate`)
    rgbd    the image set's scenes with a depth map (near shapes brighter)
    rgbn    the image set's scenes with a normal map (each shape facing left or right)
    fmri    a scene's attributes through a fixed random map into voxels, three noisy repeats

Stage "align" pairs each input with a caption, stage "instruct" asks one or two questions of it (with its
placeholder, e.g. `<|audio|>\\nhow many beeps ?` -> `three`), and the held-out split asks one question per input
in the `owl2 generate` questions format, with the answers in an `owl2 eval` references file, and asks the same
inputs for their caption (the alignment stages' prompt: the placeholder alone). Sizes come from
the `MediaConfig` given (the toy model's, or the release's). Everything is a function of the seed: the same
seed writes the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path


from owl2.data.synthetic import build_synthetic_tokenizer, synthetic_vocabulary, write_jsonl
from owl2.data.synthetic_media import audio, fmri, imu, point, rgbx, video
from owl2.data.synthetic_media.common import Item
from owl2.processing.media.config import MediaConfig
from owl2.processing.templates import PLACEHOLDERS

GENERATORS: dict[str, tuple[Callable[..., Item], tuple[str, ...]]] = {
    "image": (rgbx.make_image, rgbx.IMAGE_QUESTION_TYPES),
    "video": (video.make, video.QUESTION_TYPES),
    "audio": (audio.make, audio.QUESTION_TYPES),
    "point": (point.make, point.QUESTION_TYPES),
    "rgbd": (rgbx.make_rgbd, rgbx.RGBD_TYPES),
    "rgbn": (rgbx.make_rgbn, rgbx.RGBN_TYPES),
    "fmri": (fmri.make, fmri.QUESTION_TYPES),
    "imu": (imu.make, imu.QUESTION_TYPES),
}
"""Modality -> (its generator `(rng, config, folder, stem) -> Item`, its question types)."""
SPLITS = ("align", "instruct", "heldout")
"""Splits, each drawn from its own random stream."""
ONELLM_WORDS = (
    "beep beeps tone high low rising falling moving up down sphere cube cone still walking turning near far facing "
    "human ###"
).split()
"""Words these modalities add to `synthetic_vocabulary()`, in order."""
TURNS_PER_RECORD = 2
"""Questions per instruct record (fewer when the modality has fewer question types)."""


def onellm_vocabulary() -> list[str]:
    """The image set's words, then `ONELLM_WORDS` it lacks: every word this data set writes."""
    words = synthetic_vocabulary()
    return words + [word for word in ONELLM_WORDS if word not in words]


def build_onellm_tokenizer():
    """`build_synthetic_tokenizer` over `onellm_vocabulary()`: the image set's ids, then the new words'."""
    return build_synthetic_tokenizer(onellm_vocabulary())


def write_synthetic_onellm_dataset(
    out_dir: str | Path,
    seed: int = 0,
    media_config: MediaConfig | None = None,
    num_per_modality: int = 200,
    num_heldout: int = 50,
    modalities: tuple[str, ...] = tuple(GENERATORS),
) -> dict[str, Path]:
    """Write the synthetic OneLLM data set: per modality, its files and its records, and the tokenizer.

    For each modality M: `M/` (the files, e.g. `audio/align_000000.wav`; rgbd/rgbn pairs `rgbd/x.png` and
    `rgbd/x_depth.png`), `M_align.jsonl` (`id`, M, `caption`), `M_instruct.jsonl` (`id`, M, `conversations`),
    `M_heldout.jsonl` (`id`, `question` with its placeholder, M, `question_type`: `owl2 generate`'s input) and
    `M_references.jsonl` (`id`, `answer`, `question_type`, `modality`: `owl2 eval`'s references), and the same for
    the captions of the held-out inputs, `M_captions.jsonl` and `M_caption_references.jsonl`. Paths in
    records are relative to `out_dir`, the image folder of every file. Also `tokenizer/`
    (`build_onellm_tokenizer`).

    Args:
        out_dir: Folder to write into (created if missing).
        seed: Everything written is a function of it.
        media_config: The sizes (audio length, IMU samples, fMRI voxels, image side ...); the release's by default.
        num_per_modality: Records of each training split (align and instruct) per modality.
        num_heldout: Held-out questions per modality, on inputs not used for training; types in turn.
        modalities: Which to write, from `GENERATORS`.

    Returns:
        Paths by name: `M_align`, `M_instruct`, `M_heldout`, `M_references`, `M_captions`, `M_caption_references`,
        `M_files` for each modality M;
        `image_folder` (`out_dir`) and `tokenizer`.

    Raises:
        ValueError: For a modality not in `GENERATORS`.
    """
    unknown = [m for m in modalities if m not in GENERATORS]
    if unknown:
        raise ValueError(f"modalities: unknown {unknown}; expected some of {tuple(GENERATORS)}")
    config = media_config or MediaConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"image_folder": out}
    for modality in modalities:
        make, qtypes = GENERATORS[modality]
        folder = out / modality
        folder.mkdir(exist_ok=True)
        placeholder = PLACEHOLDERS[modality]
        streams = {split: random.Random(f"{seed}-{modality}-{split}") for split in SPLITS}
        sizes = {"align": num_per_modality, "instruct": num_per_modality, "heldout": num_heldout}
        records: dict[str, list[dict]] = {split: [] for split in SPLITS}
        references, captions, caption_references = [], [], []
        for split in SPLITS:
            rng = streams[split]
            for i in range(sizes[split]):
                item = make(rng, config, folder, f"{split}_{i:06d}")
                rid = f"{modality}-{split}-{i}"
                if split == "align":
                    records[split].append({"id": rid, modality: item.value, "caption": item.caption})
                elif split == "instruct":
                    conversations = []
                    for t, qtype in enumerate(rng.sample(qtypes, min(TURNS_PER_RECORD, len(qtypes)))):
                        question, answer = item.questions[qtype]
                        question = f"{placeholder}\n{question}" if t == 0 else question
                        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
                    records[split].append({"id": rid, modality: item.value, "conversations": conversations})
                else:
                    qtype = qtypes[i % len(qtypes)]
                    question, answer = item.questions[qtype]
                    records[split].append({"id": rid, "question": f"{placeholder}\n{question}", modality: item.value,
                                           "question_type": qtype})  # fmt: skip
                    references.append({"id": rid, "answer": answer, "question_type": qtype, "modality": modality})
                    captions.append({"id": f"{rid}-caption", "question": placeholder, modality: item.value,
                                     "question_type": "caption"})  # fmt: skip
                    caption_references.append({"id": f"{rid}-caption", "answer": item.caption,
                                               "question_type": "caption", "modality": modality})  # fmt: skip
        for split in SPLITS:
            paths[f"{modality}_{split}"] = out / f"{modality}_{split}.jsonl"
            write_jsonl(paths[f"{modality}_{split}"], records[split])
        paths[f"{modality}_references"] = out / f"{modality}_references.jsonl"
        write_jsonl(paths[f"{modality}_references"], references)
        paths[f"{modality}_captions"] = out / f"{modality}_captions.jsonl"
        write_jsonl(paths[f"{modality}_captions"], captions)
        paths[f"{modality}_caption_references"] = out / f"{modality}_caption_references.jsonl"
        write_jsonl(paths[f"{modality}_caption_references"], caption_references)
        paths[f"{modality}_files"] = folder
    paths["tokenizer"] = out / "tokenizer"
    build_onellm_tokenizer().save_pretrained(paths["tokenizer"])
    return paths
