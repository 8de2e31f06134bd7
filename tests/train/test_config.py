"""Training config: YAML loading, --set overrides, validation naming the key; the shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from owl2.train import ConfigError, load_train_config
from owl2.train.config import FILE_RELATIVE_KEYS
from owl2.train.data import resolve_paths
from owl2.train.engine import resolve_config
from owl2.train.schedule import warmup_cosine
from tests.conftest import REPO

CONFIGS = sorted(p for p in (REPO / "configs" / "train").glob("*.yaml") if p.name.startswith(("smoke-", "stage", "onellm-7b-")))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_train_config(path)
    assert config.output_dir


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_config_file_references_resolve_from_any_working_directory(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `owl2 demo` and `owl2 train` are run from anywhere
    config = load_train_config(path, ["data.synthetic=true"])  # the demo configs leave their data to `owl2 demo`
    written = yaml.safe_load(path.read_text())
    for key in set(FILE_RELATIVE_KEYS) & set(written):
        assert Path(getattr(config, key)).is_file(), f"{path.name}: {key}"
    (tmp_path / "mine.json").write_text("{}")
    assert load_train_config(path, ["data.synthetic=true", "deepspeed=mine.json"]).deepspeed == "mine.json"


def test_overrides_are_dotted_and_yaml_typed():
    config = load_train_config(
        REPO / "configs/train/smoke-stage1.yaml",
        ["max_steps=7", "optim.lr=3e-4", "data.synthetic_records=10", "optim.lr_multipliers={abstractor.*: 2}"],
    )
    assert (config.max_steps, config.optim.lr, config.data.synthetic_records) == (7, 3e-4, 10)
    assert config.optim.lr_multipliers == {"abstractor.*": 2}


@pytest.mark.parametrize(
    "override, key",
    [("optim.lrr=1", "optim.lrr"), ("stage=finetune", "stage"), ("data.on_error=ignore", "data.on_error"), ("max_steps=-1", "max_steps")],
)
def test_bad_keys_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_train_config(REPO / "configs/train/smoke-stage1.yaml", [override])


@pytest.mark.parametrize("key", ["data.tokenizer", "data.image_folder"])
def test_missing_data_folders_are_named(tmp_path, key):
    folders = {"data.tokenizer": tmp_path, "data.image_folder": tmp_path, key: tmp_path / "missing"}
    overrides = ["data.synthetic=false", f"data.path={tmp_path / 'd.jsonl'}", *(f"{k}={v}" for k, v in folders.items())]
    config = load_train_config(REPO / "configs/train/smoke-stage2.yaml", overrides)
    with pytest.raises(ConfigError, match=rf"{key.replace('.', '[.]')}: .*missing is not a folder"):
        resolve_paths(config, image_size=56)


def test_deepspeed_autos_filled_and_conflicts_named():
    config = load_train_config(REPO / "configs/train/smoke-stage1.yaml", ["global_batch_size=48"])  # micro 8
    ds = resolve_config({"train_batch_size": "auto", "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto"}}, config, 2, 16)
    assert (ds["train_batch_size"], ds["gradient_accumulation_steps"]) == (48, 3)
    assert ds["zero_optimization"]["reduce_bucket_size"] == 256
    assert not ds["checkpoint"]["load_universal"]
    with pytest.raises(ConfigError, match="gradient_accumulation_steps is 1 but the training config says 6"):
        resolve_config({"gradient_accumulation_steps": 1}, config, 1, 16)


def test_cpu_runs_use_torch_fused_adamw():
    config = load_train_config(REPO / "configs/train/smoke-stage1.yaml", [])
    params = resolve_config({}, config, 1, 16)["optimizer"]["params"]
    assert params["torch_adam"] and params["fused"]  # DS_ACCELERATOR=cpu in the tests


def test_warmup_then_cosine():
    assert warmup_cosine(0, 4, 10) == pytest.approx(1 / 5)
    assert warmup_cosine(3, 4, 10) == pytest.approx(4 / 5)
    assert warmup_cosine(4, 4, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 4, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_train_config(REPO / "configs/train/smoke-stage1.yaml", ["micro_batch_size=two"])


def test_activation_checkpointing_reaches_the_decoder_abstractor_and_vit(tmp_path):
    from owl2.train.loop import build_model
    from tests.train.conftest import tiny_config

    model = build_model(tiny_config(1, tmp_path, "activation_checkpointing=true"))
    assert model.vision_model.grad_checkpointing
    assert all(layer.gradient_checkpointing for layer in model.language_model.layers)
    assert all(layer.gradient_checkpointing for layer in model.abstractor.layers)
