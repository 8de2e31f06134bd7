"""Lazy package exports: `import owl2` and the command line's parser touch no heavy dependency."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "transformers", "timm", "deepspeed", "numpy")
PACKAGES = ("owl2", "owl2.data", "owl2.demo", "owl2.eval", "owl2.models", "owl2.processing", "owl2.train")


def _modules_after(code: str) -> set[str]:
    """Top-level modules imported by `code` run in a fresh interpreter."""
    probe = code + "\nimport json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_owl2_and_the_cli_parser_load_no_heavy_dependency():
    loaded = _modules_after("import owl2\nfrom owl2 import IMAGE_TOKEN_INDEX\nfrom owl2.cli.main import build_parser\nbuild_parser()")
    assert not loaded & set(HEAVY), f"imported at start-up: {sorted(loaded & set(HEAVY))}"


def test_a_name_imports_its_module_only_when_used():
    loaded = _modules_after("from owl2 import Owl2Config")
    assert "transformers" in loaded and "timm" not in loaded  # the config, not the model


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


@pytest.mark.parametrize("command", ["generate --input q.jsonl --output a.jsonl", "chat"])
def test_a_missing_model_folder_is_reported_before_torch_is_imported(command):
    argv = ["--model", "/nonexistent/model", *command.split()[1:]]
    code = f"from owl2.cli.main import main\nassert main({[command.split()[0], *argv]!r}) == 2"
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), f"imported before the error: {sorted(loaded & set(HEAVY))}"
