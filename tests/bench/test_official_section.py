"""`tools/bench.py --sections official`: the orchestration against the official code, end to end at toy dims.

The official code needs its own old environment (torch 2.0.1, transformers 4.31), which CI does not build. So the
official folder here is a stand-in package `mplug_owl2` with the official entry point and call signature
(`MPLUGOwl2LlamaForCausalLM.from_pretrained(dir)`, `images=`), which converts the exported official folder with
owl2's converter and runs owl2 behind it. What this tests: the export to the official layout, each contender in its
own processes, the alternation and the medians, and that all three contenders see the same inputs (same tokens).
The figures against the real official code are in BENCHMARKS.md, with the command that made them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.bench.test_tool import load_tool
from tests.conftest import REPO

STAND_IN = '''
"""Stand-in for the official mplug_owl2.model (see tests/bench/test_official_section.py)."""
import json
import tempfile
import types
from pathlib import Path

import torch

from owl2 import Owl2Model
from owl2.checkpoint.convert import convert_official


class MPLUGOwl2LlamaForCausalLM(torch.nn.Module):
    def __init__(self, inner, visual_config):
        super().__init__()
        self.inner = inner
        self.config = types.SimpleNamespace(vocab_size=inner.config.text_config.vocab_size, visual_config=visual_config)

    @classmethod
    def from_pretrained(cls, path, torch_dtype=None):
        visual = json.loads((Path(path) / "config.json").read_text())["visual_config"]
        with tempfile.TemporaryDirectory() as tmp:  # the weights are in memory once loaded
            convert_official(path, Path(tmp) / "owl2", progress=False)
            return cls(Owl2Model.from_pretrained(Path(tmp) / "owl2", torch_dtype=torch_dtype), visual)

    def forward(self, input_ids, labels=None, images=None):
        return self.inner(input_ids=input_ids, labels=labels, pixel_values=images)

    def generate(self, input_ids, images=None, **options):
        return self.inner.generate(input_ids=input_ids, pixel_values=images, **options)
'''


def test_official_section_runs_each_contender_in_its_own_processes(tmp_path):
    package = tmp_path / "official" / "mplug_owl2" / "model"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text(textwrap.dedent(STAND_IN))
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "tools/bench.py", "--tiny", "--sections", "official", "--official", str(tmp_path / "official"),
           "--official-python", sys.executable, "--official-rounds", "1", "--official-works", "generate",
           "--compile-backend", "aot_eager", "--json", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    official = json.loads(out.read_text())["official"]
    assert "train" not in official and "fwd_bwd" not in official  # only the works asked for (time: 3 processes)
    for work in ("generate",):
        medians = official[work]["median_s"]
        assert set(medians) == {"official", "owl2", "owl2_compiled"} and all(t > 0 for t in medians.values())
        assert official[work]["official_over_owl2"] == medians["official"] / medians["owl2"]
    assert all(official["generate"]["same_tokens"].values())  # same inputs, the same model behind every contender


def test_official_section_needs_both_paths(tmp_path, capsys):
    tool = load_tool()
    for argv, message in ((["--sections", "official"], "--official"),
                          (["--official", str(tmp_path), "--official-python", sys.executable], "mplug_owl2")):  # fmt: skip
        with pytest.raises(SystemExit) as exit:
            tool.main(["--tiny", *argv])
        assert exit.value.code == 2 and message in capsys.readouterr().err
