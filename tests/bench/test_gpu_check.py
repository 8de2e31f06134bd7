"""`tools/gpu_check.py` runs every section end to end at toy dims on the CPU, so the GPU run is one call away."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_check_runs_every_section_at_toy_dims(tmp_path):
    cmd = [sys.executable, "tools/gpu_check.py", "--tiny", "--device", "cpu", "--compile-backend", "aot_eager",
           "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not [name for name in ("mfu", "packing", "decode", "upm", "agreement", "tests") if "error" in results[name]]
    assert results["upm"]["max_abs_difference"] < 1e-4 and results["upm"]["onellm"]["generation"]["same_tokens"]
    mfu = results["mfu"]
    assert mfu["model_flops_per_step"] > 0 and mfu["counted_flops_per_step"] > 0
    assert mfu["eager"]["step_s"] > 0 and mfu["compiled"]["step_s"] > 0
    packing = results["packing"]
    assert packing["varlen"] in ("owl2_varlen", "flash_attention_2") and packing["padded_over_real"] >= 1
    for key in ("batch_1", "batch_2"):
        assert results["decode"][key]["same_tokens"], key  # compiled static decoding picks the eager tokens
    assert results["agreement"]["passed"] and results["tests"]["returncode"] == 0
    assert "| train step, compiled |" in (tmp_path / "gpu_check.md").read_text()
