"""Streaming I/O: bounded shards, atomic output, and the peak memory of converting a multi-shard checkpoint."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from owl2.checkpoint.io import ShardedWriter, atomic_folder, load_state_dict, weight_files
from tests.checkpoint import official_reference as ref
from tests.checkpoint.folders import write_folder
from tests.conftest import REPO


def test_writer_bounds_shards_and_indexes_them(tmp_path):
    tensors = {f"t{i}": torch.full((256,), float(i)) for i in range(10)}  # 1 KiB each
    with ShardedWriter(tmp_path, max_shard_bytes=3 * 1024) as writer:
        writer.add(dict(list(tensors.items())[:4]))
        writer.add(dict(list(tensors.items())[4:]))
    files = weight_files(tmp_path)
    assert [f.name for f in files] == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert all(len(load_file(f)) <= 3 for f in files)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 10 * 1024 and len(index["weight_map"]) == 10
    assert all(torch.equal(load_state_dict(tmp_path)[k], v) for k, v in tensors.items())
    writer = ShardedWriter(tmp_path / "other")
    writer.add({"t3": torch.zeros(1)})
    with pytest.raises(KeyError, match="'t3' given twice"):
        writer.add({"t3": torch.zeros(1)})


def test_single_shard_gets_the_plain_name(tmp_path):
    with ShardedWriter(tmp_path, weights_format="bin") as writer:
        writer.add({"a": torch.zeros(2)})
    assert [f.name for f in tmp_path.iterdir()] == ["pytorch_model.bin"]


def test_output_appears_only_when_complete(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(tmp_path / "out") as staging:
            (staging / "half.safetensors").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(tmp_path / "out") as staging:
        (staging / "config.json").write_text("{}")
    assert (tmp_path / "out" / "config.json").is_file()
    with pytest.raises(FileExistsError, match="out already exists"):
        with atomic_folder(tmp_path / "out"):
            pass


_MEASURE = """
import json, runpy, sys
import torch, transformers, owl2.checkpoint.convert, owl2.models.owl2  # imports are not the conversion's memory


def status(field):  # kB, from the kernel's accounting of this process
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])


with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak RSS (VmHWM) to the current RSS
base = status("VmRSS")
sys.argv = ["convert_checkpoint.py", "mplug-owl2", sys.argv[1], sys.argv[2], "--max-shard-size", sys.argv[3], "--no-progress"]
try:
    runpy.run_path({tool!r}, run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps({{"base_kib": base, "peak_kib": status("VmHWM")}}))
"""


def test_peak_memory_stays_near_one_shard(tmp_path):
    """Convert a 8-shard synthetic checkpoint in a subprocess (the CLI) and read its peak RSS."""
    config = ref.official_config(vocab=16000, width=256, ffn=4096, layers=8, heads=4, kv_heads=2)
    state_dict = ref.random_official_state_dict(config)
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    source = write_folder(tmp_path / "official", config, state_dict, "bin", num_shards=8)
    del state_dict
    input_shard = max(f.stat().st_size for f in weight_files(source))
    output_shard = 16 * 2**20
    script = _MEASURE.format(tool=str(REPO / "tools" / "convert_checkpoint.py"))
    result = subprocess.run(
        [sys.executable, "-c", script, str(source), str(tmp_path / "owl2"), str(output_shard)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    usage = json.loads(result.stdout.strip().splitlines()[-1])
    grown = (usage["peak_kib"] - usage["base_kib"]) * 1024
    print(f"\ntotal {total / 2**20:.0f} MiB, input shard {input_shard / 2**20:.0f} MiB, output shard "
          f"{output_shard / 2**20:.0f} MiB, peak RSS {usage['peak_kib'] / 2**10:.0f} MiB, "
          f"growth over the imports {grown / 2**20:.0f} MiB")  # fmt: skip
    assert grown < 0.5 * total, f"peak RSS grew by {grown / 2**20:.0f} MiB for a {total / 2**20:.0f} MiB checkpoint"
    assert grown < 2 * (input_shard + output_shard)
    assert len(weight_files(tmp_path / "owl2")) > 1
