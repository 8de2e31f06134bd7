"""The training configuration (official `train.py` `ModelArguments`, `DataArguments`, `TrainingArguments`
and `scripts/finetune.sh`, paper section 4.1 "Implementation").

One YAML file per run; `--set key=value` overrides any key (dotted for nested sections, values
parsed as YAML). Every field is documented below and unknown keys are errors naming the key, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from owl2.data.dataset import ON_ERROR

SYNTHETIC_SPLITS = ("stage1", "stage2")
"""Training splits of the built-in synthetic data set."""
FILE_RELATIVE_KEYS = ("model_config", "deepspeed")
"""Keys that name other config files. A relative path written in a config file is relative to that file's
folder, as an include is, so a config works from any working directory; in an override it is relative to
the working directory, as any command-line path is."""

REPLACED_KEYS = {
    "gradient_accumulation_steps": "set global_batch_size instead (samples per optimizer step, all ranks together); "
    "accumulation follows from it as global_batch_size / (micro_batch_size x world size)",
}
"""Keys of earlier configs, with what replaced them."""


class ConfigError(ValueError):
    """A bad training configuration; the message names the key and what was expected."""


@dataclass
class DataConfig:
    """Where the samples come from (official `DataArguments`)."""

    path: str = ""
    """A LLaVA-style `.json`/`.jsonl` file; with `synthetic`, defaults to the synthetic split."""
    image_folder: str = ""
    """Folder the records' input paths (images, audio ...) are relative to."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Instead of `path`, a mixture (OneLLM's data sets of every modality seen so far): a list of
    `{path, repeat: 1, image_folder: data.image_folder}`. Every global batch is drawn from one source and one
    modality group of it; a source contributes `repeat` shuffled passes an epoch (`owl2.data.mixture`)."""
    order: str = "uniform"
    """How a mixture's batches interleave: `uniform` (shuffled together: each step draws from all the data) or
    `round_robin` (the release's: one batch per source in turn, cut to the shortest)."""
    tokenizer: str = ""
    """Tokenizer folder; empty: `init_from` (if it has one), else the synthetic tokenizer."""
    template: str = ""
    """Chat template name (`owl2.processing.TEMPLATES`); empty: the family's (`mplug_owl2`, `onellm`)."""
    max_length: int = 2048
    """Limit in LLM tokens, input tokens included (official `model_max_length`)."""
    on_error: str = "skip"
    """Bad-record policy: `skip` (count and go on) or `stop`."""
    image_aspect: str = "pad"
    """`pad` or `resize` (official `image_aspect_ratio`)."""
    group_by_modality: bool = True
    """Batch image and text-only samples apart, grouped by length (official `group_by_modality_length`).
    Keep it on for data that mixes modalities under ZeRO-3: every rank must run the vision tower, or none."""
    num_workers: int = 0
    """DataLoader worker processes per rank."""
    synthetic: bool = False
    """Build the built-in synthetic data set and tokenizer into `output_dir/synthetic` and train on it."""
    synthetic_split: str = "stage1"
    """Synthetic split to train on: `stage1` (captions) or `stage2` (instructions, text-only mixed in)."""
    synthetic_records: int = 2000
    """Records per synthetic training split."""

    def data_sources(self) -> list[DataSource]:
        """`sources` as `DataSource`s (or `path` as the only one), each with its image folder.

        Raises:
            ConfigError: Naming the entry of `sources` that is malformed.
        """
        if not self.sources:
            return [DataSource(self.path, self.image_folder, 1)]
        entries = []
        for k, entry in enumerate(self.sources):
            key = f"data.sources[{k}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{key}: expected a mapping {{path, repeat, image_folder}}, got {entry!r}")
            unknown = sorted(set(entry) - {"path", "repeat", "image_folder"})
            if unknown:
                raise ConfigError(f"{key}: unknown keys {unknown}; expected path, repeat, image_folder")
            path, repeat = entry.get("path"), entry.get("repeat", 1)
            folder = entry.get("image_folder", self.image_folder)
            if not isinstance(path, str) or not path:
                raise ConfigError(f"{key}.path: expected a data file, got {path!r}")
            if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
                raise ConfigError(f"{key}.repeat: expected a positive integer, got {repeat!r}")
            if not isinstance(folder, str):
                raise ConfigError(f"{key}.image_folder: expected a folder path, got {folder!r}")
            entries.append(DataSource(path, folder, repeat))
        return entries


@dataclass(frozen=True)
class DataSource:
    """One data file of a run, with its input folder and its passes per epoch."""

    path: str
    image_folder: str
    repeat: int


@dataclass
class OptimConfig:
    """AdamW, its parameter groups and the LR schedule (paper section 4.1)."""

    lr: float = 1e-4
    """Peak learning rate (paper: 1e-4 pre-training, 2e-5 instruction tuning)."""
    weight_decay: float = 0.05
    """Decoupled weight decay on matrices; norms, biases, embeddings, queries and position tables get none."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""
    eps: float = 1e-6
    """AdamW epsilon."""
    layer_decay: float = 0.9
    """Layer-wise LR decay over the ViT blocks (1.0 switches it off); the last block gets `lr * layer_decay`."""
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    """Glob over parameter names -> LR multiplier (first match wins), e.g. `{"abstractor.*": 2.0}`."""
    no_decay: list[str] = field(
        default_factory=lambda: ["*embed_tokens*", "*pos_embed", "*cls_token", "*query_embeds", "*eos_embed", "*norm*"]
    )
    """Globs of parameters without weight decay, on top of every 1-D parameter (norms, biases)."""
    warmup_steps: int = 0
    """Linear warm-up steps; 0: `warmup_ratio` of the run."""
    warmup_ratio: float = 0.03
    """Warm-up as a fraction of the run, used when `warmup_steps` is 0."""
    min_lr_ratio: float = 0.0
    """Cosine floor as a fraction of the peak LR."""


@dataclass
class TrainConfig:
    """One training run (a stage of the recipe)."""

    output_dir: str = ""
    """Receives `metrics.jsonl`, `checkpoint-<step>/`, `final/`; a re-run resumes from its latest checkpoint."""
    init_from: str = ""
    """An `Owl2Model` folder to start from; empty: random init from `model_config`."""
    model_config: str = "configs/model/owl2-toy.json"
    """Model preset (JSON) used when `init_from` is empty; see `FILE_RELATIVE_KEYS` for relative paths."""
    stage: str = "pretrain"
    """Stage policy name (`owl2.train.policy`): mPLUG-Owl2's `pretrain`, `instruct`; OneLLM's `onellm_align`,
    `onellm_instruct`, `onellm_instruct_release`."""
    modalities: list[str] = field(default_factory=list)
    """`onellm_align`: the modalities whose parts train in this stage (stage I `[image]`; stage II the new ones
    and, to train them on, the earlier ones)."""
    init_from_image: list[str] = field(default_factory=list)
    """OneLLM: modalities whose projection parts start as copies of the image's ("Image Init",
    `owl2.models.image_init`) when the run starts (not on resume)."""
    trainable: list[str] | None = None
    """Globs of trainable parameters; None: the stage's default. Everything else is frozen."""
    image_size: int = 0
    """mPLUG-Owl2's input resolution; the ViT position table is resampled if it differs from the checkpoint's.
    0: keep."""
    data: DataConfig = field(default_factory=DataConfig)
    """The data."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The optimiser and schedule."""
    max_steps: int = 0
    """Optimizer steps; 0: `num_epochs` over the data."""
    num_epochs: float = 1.0
    """Epochs, used when `max_steps` is 0."""
    stop_at_step: int = 0
    """End this invocation after this step, checkpointed, as if interrupted (the schedule still spans the
    whole run; re-running resumes). 0: run to the end."""
    micro_batch_size: int = 2
    """Samples per rank per forward (DeepSpeed `train_micro_batch_size_per_gpu`)."""
    global_batch_size: int = 0
    """Samples per optimizer step, all ranks together, fixed for the run: gradient accumulation is
    `global_batch_size / (micro_batch_size x world size)`, so a resume on another world size keeps it.
    0: `micro_batch_size x world size` (no accumulation) when a run starts; a resume keeps the checkpoint's."""
    gradient_clipping: float = 1.0
    """Max global gradient norm (0 switches clipping off)."""
    bf16: bool = False
    """Train in bfloat16 with fp32 master weights (DeepSpeed `bf16.enabled`)."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass (ViT blocks and decoder layers) to save memory."""
    compile: bool = False
    """`torch.compile` every block of the model (decoder layers, ViT blocks, abstractor layers; see
    `owl2.compile.compile_blocks`) before training; the first steps of each new shape pay the compile time."""
    deepspeed: str | dict[str, Any] = "configs/deepspeed/zero2.json"
    """DeepSpeed config: a JSON path (see `FILE_RELATIVE_KEYS`) or an inline dict; its batch, precision and
    clipping keys are filled from the fields here."""
    seed: int = 42
    """Seed of the model init, the data order and every rank's RNG."""
    save_steps: int = 500
    """Write `checkpoint-<step>/` every this many steps (0: only at the end)."""
    save_total_limit: int = 2
    """Checkpoints kept (oldest deleted first; 0 keeps all)."""
    logging_steps: int = 1
    """Append to `metrics.jsonl` every this many steps."""
    log_sample_ids: bool = False
    """Also append each step's sample indices (per rank) to `sample_ids.jsonl`: a record to check that a
    resume, on any world size, neither repeats nor skips a sample."""
    tensorboard: bool = True
    """Also write TensorBoard scalars to `output_dir/tensorboard` (skipped if tensorboard is missing)."""

    def validate(self) -> "TrainConfig":
        """Check values, raising `ConfigError` naming the key."""
        from owl2.data.mixture import ORDERS
        from owl2.train.policy import STAGE_NAMES  # policy imports nothing from here; keeps the module graph flat

        checks = [
            (bool(self.output_dir), "output_dir", "a folder path"),
            (self.stage in STAGE_NAMES, "stage", f"one of {sorted(STAGE_NAMES)}"),
            (self.max_steps >= 0, "max_steps", "a non-negative integer"),
            (self.stop_at_step >= 0, "stop_at_step", "a non-negative integer"),
            (self.max_steps > 0 or self.num_epochs > 0, "num_epochs", "positive when max_steps is 0"),
            (self.micro_batch_size >= 1, "micro_batch_size", "a positive integer"),
            (self.global_batch_size >= 0, "global_batch_size", "a non-negative integer"),
            (self.gradient_clipping >= 0, "gradient_clipping", "non-negative"),
            (self.save_steps >= 0, "save_steps", "non-negative"),
            (self.logging_steps >= 1, "logging_steps", "a positive integer"),
            (self.image_size >= 0, "image_size", "non-negative"),
            (self.optim.lr > 0, "optim.lr", "positive"),
            (0 < self.optim.layer_decay <= 1, "optim.layer_decay", "in (0, 1]"),
            (0 <= self.optim.warmup_ratio < 1, "optim.warmup_ratio", "in [0, 1)"),
            (0 <= self.optim.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]"),
            (self.data.on_error in ON_ERROR, "data.on_error", f"one of {ON_ERROR}"),
            (self.data.synthetic_split in SYNTHETIC_SPLITS, "data.synthetic_split", f"one of {SYNTHETIC_SPLITS}"),
            (bool(self.data.path) or bool(self.data.sources) or self.data.synthetic, "data.path",
             "a data file (or data.sources, or data.synthetic: true)"),
            (not (self.data.path and self.data.sources), "data.sources", "empty when data.path is set (one or the other)"),
            (self.data.order in ORDERS, "data.order", f"one of {ORDERS}"),
            (bool(self.init_from) or bool(self.model_config), "model_config", "a preset JSON when init_from is empty"),
            (isinstance(self.deepspeed, (str, dict)), "deepspeed", "a JSON path or a dict"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f"{key}: expected {expected}, got {_get(self, key)!r}")
        self.data.data_sources()
        return self

    def global_batch(self, world_size: int) -> int:
        """Samples per optimizer step on `world_size` ranks: `global_batch_size`, or one micro-batch a rank if 0."""
        return self.global_batch_size or self.micro_batch_size * world_size

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches each rank accumulates per optimizer step: global batch / (micro batch x world size).

        Raises:
            ConfigError: If the global batch is not a whole number of micro-batches on every rank.
        """
        per_step = self.micro_batch_size * world_size
        if self.global_batch(world_size) % per_step:
            raise ConfigError(
                f"global_batch_size: {self.global_batch(world_size)} is not a multiple of micro_batch_size x world "
                f"size = {self.micro_batch_size} x {world_size} = {per_step}: each of the {world_size} ranks must "
                f"accumulate a whole number of micro-batches of {self.micro_batch_size}"
            )
        return self.global_batch(world_size) // per_step

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what `config.yaml` in `output_dir` holds)."""
        return dataclasses.asdict(self)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Turn YAML's strings into the field's number type ("3e-4" is a string in YAML 1.1); reject wrong types."""
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif kind in (int, float) and not isinstance(value, bool):
        try:
            number = kind(value) if not isinstance(value, str) or kind is float else int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a{'n integer' if kind is int else ' number'}, got {value!r}") from None
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return number
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate a config dataclass from a dict, recursing into nested sections."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            if f"{prefix}{key}" in REPLACED_KEYS:
                raise ConfigError(f"{prefix}{key}: no longer a key; {REPLACED_KEYS[prefix + key]}")
            raise ConfigError(f"{prefix}{key}: unknown key; expected one of {sorted(fields)}")
        spec = fields[key]
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, f"{prefix}{key}.")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = _coerce(value, default, f"{prefix}{key}")
    return cls(**kwargs)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides (dotted keys, YAML values) to a nested dict, in place.

    Raises:
        ConfigError: If an override has no `=`.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return values


def load_train_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML (or JSON) training config, apply `--set` style overrides and validate.

    Args:
        path: The config file; None starts from the defaults.
        overrides: `key=value` strings, e.g. `["max_steps=20", "optim.lr=3e-4"]`.

    Raises:
        ConfigError: For an unreadable file, an unknown key or a bad value (the key is named).
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        values = loaded or {}
        for key in FILE_RELATIVE_KEYS:
            value = values.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                values[key] = str((path.parent / value).resolve())  # absolute: `config.yaml` records it
    values = apply_overrides(values, list(overrides))
    try:
        return _build(TrainConfig, values).validate()
    except ConfigError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def load_deepspeed_config(spec: str | dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed config dict from a JSON path or an inline dict (a copy)."""
    if isinstance(spec, dict):
        return json.loads(json.dumps(spec))
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"deepspeed: {path} is not a file (expected a DeepSpeed JSON config)")
    return json.loads(path.read_text())
