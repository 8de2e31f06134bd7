"""OneLLM on the trainer: its data through the shared data set and collator, the mixture sampler, the stage
policies with Image Init, and bit-identical resume (paper section 3.3)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from owl2.config import OneLLMConfig
from owl2.data.dataset import Collator, ConcatDataset, SupervisedDataset
from owl2.data.records import RecordError
from owl2.data.synthetic_onellm import write_synthetic_onellm_dataset
from owl2.models.onellm import OneLLMModel
from owl2.processing.media import OneLLMMediaProcessor
from owl2.processing.processor import OneLLMProcessor
from owl2.train import load_train_config, run
from owl2.train.config import ConfigError
from owl2.train.data import ResumableSampler, mixture_sources
from owl2.train.loop import build_model, model_family
from owl2.train.metrics import read_metrics
from tests.conftest import REPO

PRESET = REPO / "configs/model/onellm-toy.json"
DEEPSPEED = Path(sys.executable).with_name("deepspeed")
MODALITIES = ("image", "audio", "point")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    media = OneLLMMediaProcessor.from_model_config(OneLLMConfig.from_json_file(PRESET)).config
    folder = tmp_path_factory.mktemp("onellm-data")
    paths = write_synthetic_onellm_dataset(folder, seed=0, media_config=media, num_per_modality=16, num_heldout=2,
                                           modalities=MODALITIES)  # fmt: skip
    two = {"id": "two", "audio": "audio/align_000000.wav", "point": "point/align_000000.npy",
           "conversations": [{"from": "human", "value": "<|audio|> and <|point|> ?"}, {"from": "gpt", "value": "a cube ."}]}
    paths["two_inputs"] = folder / "two_inputs.jsonl"
    paths["two_inputs"].write_text(json.dumps(two) + "\n")
    return paths


def processor(paths) -> OneLLMProcessor:
    from transformers import AutoTokenizer

    media = OneLLMMediaProcessor.from_model_config(OneLLMConfig.from_json_file(PRESET))
    return OneLLMProcessor(AutoTokenizer.from_pretrained(str(paths["tokenizer"])), media)


def config(out: Path, paths, *overrides: str, sources=("image_align", "audio_align")):
    listed = "[" + ", ".join(f"{{path: '{paths[s]}'}}" for s in sources) + "]"
    return load_train_config(None, [
        f"output_dir={out}", f"model_config={PRESET}", "stage=onellm_align", "modalities=[audio]",
        f"data.sources={listed}", f"data.image_folder={paths['image_folder']}", f"data.tokenizer={paths['tokenizer']}",
        "deepspeed=" + str(REPO / "configs/deepspeed/zero0.json"), "micro_batch_size=4", "global_batch_size=8",
        "max_steps=4", "save_steps=0", "tensorboard=false", "data.max_length=128", "optim.warmup_steps=1",
        "optim.layer_decay=1.0", *overrides,
    ])  # fmt: skip


def test_records_of_any_modality_batch_into_modality_inputs(data):
    proc = processor(data)
    block = OneLLMConfig.from_json_file(PRESET).num_tokens_per_input
    two = SupervisedDataset(data["two_inputs"], proc, data["image_folder"], tokens_per_input=block, on_error="stop")
    audio = SupervisedDataset(data["audio_align"], proc, data["image_folder"], tokens_per_input=block, on_error="stop")
    assert two.groups == ["audio+point"] and set(audio.groups) == {"audio"}
    batch = Collator.for_processor(proc)([two[0], audio[0], audio[1]])
    inputs = batch["modality_inputs"]
    assert set(inputs) == {"audio", "point"} and inputs["audio"].shape[0] == 3 and inputs["point"].shape[0] == 1
    torch.testing.assert_close(inputs["point"][0], proc.media_processor("point", [data["image_folder"] / "point/align_000000.npy"])[0])
    index = proc.placeholders
    assert (batch["input_ids"] == index["audio"]).sum() == 3 and (batch["input_ids"] == index["point"]).sum() == 1
    assert batch["labels"][batch["input_ids"] < 0].eq(-100).all()
    model = OneLLMModel(OneLLMConfig.from_json_file(PRESET))
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    with pytest.raises(AssertionError, match="placeholders but"):  # a broken sample never reaches the model
        broken = dict(audio[0], inputs={})
        Collator.for_processor(proc)([broken])


def test_mixture_batches_are_modality_pure_uniform_repeatable_and_even_over_ranks(data):
    proc = processor(data)
    sets = [SupervisedDataset(data[f"{m}_align"], proc, data["image_folder"], tokens_per_input=7) for m in MODALITIES]
    dataset = ConcatDataset(sets)
    cfg = config(Path("unused"), data, sources=[f"{m}_align" for m in MODALITIES])
    cfg.data.sources[1]["repeat"] = 2  # audio twice an epoch
    mixture = mixture_sources(dataset, cfg)
    samplers = {w: [ResumableSampler(dataset.lengths, cfg, w, r, dataset.groups, mixture) for r in range(w)]
                for w in (1, 2)}  # fmt: skip
    batches = samplers[1][0].global_batches(0)
    groups = dataset.groups
    assert all(len({groups[i] for i in batch}) == 1 for batch in batches)  # one modality per global batch
    per_modality = {m: sum(groups[b[0]] == m for b in batches) for m in MODALITIES}
    assert per_modality == {"image": 2, "audio": 4, "point": 2}  # 16 samples / 8, audio repeated twice
    assert [groups[b[0]] for b in batches] != [groups[b[0]] for b in sorted(batches, key=lambda b: groups[b[0]])]
    assert batches == ResumableSampler(dataset.lengths, cfg, 1, 0, dataset.groups, mixture).global_batches(0)
    assert batches != samplers[1][0].global_batches(1)  # each epoch reshuffles
    for step, batch in enumerate(batches):  # two ranks: even shares of the same global batch
        shares = [s.micro_batches(0, step)[: s.accumulation] for s in samplers[2]]
        assert [sum(map(len, share)) for share in shares] == [4, 4]
        assert sorted(i for share in shares for micro in share for i in micro) == sorted(batch)
    cfg.data.order = "round_robin"
    robin = ResumableSampler(dataset.lengths, cfg, 1, 0, dataset.groups, mixture).global_batches(0)
    assert [groups[b[0]] for b in robin] == ["image", "audio", "point"] * 2  # the release's: cut to the shortest


def test_a_source_smaller_than_a_batch_is_named(data, tmp_path):
    cfg = config(tmp_path, data, "global_batch_size=32", "micro_batch_size=4")
    with pytest.raises(ConfigError, match=r"exceeds data.sources\[0\] .*image_align.jsonl \(image\)'s 16 samples"):
        run(cfg)


def test_align_trains_only_its_parts_and_image_init_copies_the_image(data, tmp_path):
    cfg = config(tmp_path / "run", data, "modalities=[image]", "init_from_image=[audio]")
    start = build_model(cfg).state_dict()
    final = OneLLMModel.from_pretrained(run(cfg)).state_dict()
    changed = {n for n in start if not torch.equal(start[n], final[n])}
    trained = {n for n in changed if ".audio" not in n}  # audio's parts changed by the copy, not by training
    assert {n for n in trained if n.startswith("projection.experts.")} and {n for n in trained if ".image" in n}
    assert all(n.startswith("projection.experts.") or ".image" in n for n in trained), trained
    assert not any(n.startswith(("encoder.", "language_model.", "lm_head.")) for n in changed)  # CLIP, LLM frozen
    for name in final:  # the frozen audio parts hold the image's initial values: Image Init ran before training
        if name.startswith("projection.") and ".audio" in name:
            torch.testing.assert_close(final[name], start[name.replace(".audio", ".image")], rtol=0, atol=0, msg=name)
    assert json.loads((tmp_path / "run/final/config.json").read_text())["model_type"] == "onellm"
    assert (tmp_path / "run/final/media_config.json").is_file()


def test_onellm_resume_is_bit_identical(data, tmp_path):
    straight = run(config(tmp_path / "straight", data, "init_from_image=[audio]"))
    run(config(tmp_path / "resumed", data, "init_from_image=[audio]", "stop_at_step=2"))
    resumed = run(config(tmp_path / "resumed", data, "init_from_image=[audio]"))
    a, b = OneLLMModel.from_pretrained(straight).state_dict(), OneLLMModel.from_pretrained(resumed).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stage=pretrain"], r"stage: 'pretrain' is not a stage of a onellm model"),
        (["modalities=[smell]"], r"modalities: \['smell'\] are not among the model's"),
        (["stage=onellm_align", "modalities=[]"], r"modalities: .*name at least one modality"),
        (["image_size=56"], r"image_size: OneLLM's inputs are sized by its config"),
    ],
)
def test_stage_and_family_mismatches_are_config_errors(data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run(config(tmp_path, data, *overrides))


def test_mplug_owl2_presets_refuse_onellm_stages(tmp_path):
    cfg = load_train_config(REPO / "configs/train/smoke-stage1.yaml",
                            [f"output_dir={tmp_path}", "data.synthetic=true", "stage=onellm_instruct"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"stage: 'onellm_instruct' is not a stage of a owl2 model"):
        model_family(cfg)


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ("[{path: a.jsonl, repeat: 0}]", r"data.sources\[0\].repeat: expected a positive integer, got 0"),
        ("[{path: a.jsonl, epochs: 2}]", r"data.sources\[0\]: unknown keys \['epochs'\]"),
        ("[a.jsonl]", r"data.sources\[0\]: expected a mapping"),
    ],
)
def test_bad_sources_are_named(tmp_path, sources, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, [f"output_dir={tmp_path}", f"data.sources={sources}"])
    with pytest.raises(ConfigError, match="data.sources: expected empty when data.path is set"):
        load_train_config(None, [f"output_dir={tmp_path}", "data.path=a.jsonl", "data.sources=[{path: b.jsonl}]"])


def test_bad_media_records_are_skipped_and_counted_or_stop(data, tmp_path):
    proc = processor(data)
    good = json.loads(data["audio_align"].read_text().splitlines()[0])
    bad = [dict(good, audio="audio/missing.wav"), dict(good, audio="../outside.wav"), dict(good, caption=None)]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [good, *bad]))
    skip = SupervisedDataset(path, proc, data["image_folder"], tokens_per_input=7)
    assert skip[0] is not None and [skip[i] for i in (1, 2, 3)] == [None, None, None]
    assert skip.num_skipped == 3 and set(skip.skipped) == {1, 2, 3}
    assert "line 2:" in skip.skipped[1] and "missing.wav" in skip.skipped[1]
    assert "line 3:" in skip.skipped[2] and "'..'" in skip.skipped[2]
    stop = SupervisedDataset(path, proc, data["image_folder"], tokens_per_input=7, on_error="stop")
    with pytest.raises(RecordError, match=r"bad.jsonl: line 2: .*missing.wav"):
        stop[1]


@pytest.mark.skipif(shutil.which(str(DEEPSPEED)) is None, reason="deepspeed launcher not installed")
def test_two_processes_under_the_deepspeed_launcher_match_one(data, tmp_path):
    """OneLLM through `tools/train.py` under `deepspeed --num_gpus 2` with ZeRO-3 (every rank runs the same
    encoders: the batches are modality-pure): the mixture's batches dealt to two ranks give what one process gives
    for the same global batch, within rounding. (ZeRO-2 passes the same test; one is enough for the suite.)"""
    single = run(config(tmp_path / "one", data, "init_from_image=[audio]"))
    cfg = config(tmp_path / "two", data, "init_from_image=[audio]", f"deepspeed={REPO / 'configs/deepspeed/zero3.json'}")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    cmd = [str(DEEPSPEED), "--num_gpus", "2", "--master_port", str(port), "tools/train.py", "--config", str(path)]
    done = subprocess.run(cmd, cwd=REPO, env=env | {"DS_ACCELERATOR": "cpu"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    a = OneLLMModel.from_pretrained(single).state_dict()
    b = OneLLMModel.from_pretrained(tmp_path / "two" / "final").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)
