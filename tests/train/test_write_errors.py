"""A full disk or another write error while saving: one `OutputWriteError` naming the folder and the sizes,
the partial folder removed, the previous checkpoint intact; an unwritable `output_dir` caught before
training. Simulated by a write that fails part-way, and for real on a small tmpfs when one can be mounted."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from owl2 import Owl2Model
from owl2.train import OutputWriteError, run
from owl2.train import checkpoint as ckpt
from owl2.train import loop, manifest
from tests.train.conftest import tiny_config


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_part_way_through_a_checkpoint(tmp_path, monkeypatch):
    save, calls = torch.save, []

    def fills_the_disk(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 3:  # checkpoint-2's first file (each checkpoint: model states, optimizer states)
            Path(f).write_bytes(b"\0" * 1000)
            raise no_space(f)
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(OutputWriteError) as caught:
        run(tiny_config(1, tmp_path, "max_steps=3", "save_steps=1"))
    message = str(caught.value)
    previous = manifest.format_bytes(manifest.manifest_size(tmp_path / "checkpoint-1"))
    assert message.startswith(f"{tmp_path}: could not write checkpoint-2: No space left on device ({calls[2]})")
    assert f"it needs about {previous} (the size of checkpoint-1), 1000 bytes had been written" in message
    assert "free there now" in message
    assert message.endswith("Removed the partial .checkpoint-2.tmp; checkpoint-1 is intact")
    assert not (tmp_path / ".checkpoint-2.tmp").exists() and not (tmp_path / "checkpoint-2").exists()
    assert [c.name for c in ckpt.checkpoints(tmp_path)] == ["checkpoint-1"]
    assert manifest.verify(tmp_path / "checkpoint-1") == []
    assert not (tmp_path / "final").exists()


def test_a_full_disk_while_writing_final(tmp_path, monkeypatch):
    def fills_the_disk(self, folder, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 100)
        raise no_space(Path(folder) / "model.safetensors")

    monkeypatch.setattr(Owl2Model, "save_pretrained", fills_the_disk)
    with pytest.raises(OutputWriteError, match=r"could not write final/: No space left on device .*it needs about "
                                               r"[0-9.]+ MiB \(the weights alone\), 100 bytes had been written"):
        run(tiny_config(1, tmp_path, "max_steps=1"))
    assert not (tmp_path / ".final.tmp").exists() and not (tmp_path / "final").exists()
    assert manifest.verify(tmp_path / "checkpoint-1") == []  # the run can be finished by re-running it


def test_an_unwritable_output_dir_is_reported_before_training(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("in the way")
    monkeypatch.setattr(loop, "build_model", lambda config: pytest.fail("training started"))
    with pytest.raises(OutputWriteError, match=rf"^output_dir: {tmp_path}/file/run: cannot create it or write into it "
                                               r"\(Not a directory"):
        run(tiny_config(1, tmp_path / "file" / "run"))


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of the given options on a fresh folder (skips where mounting is not allowed); unmounting
    afterwards also checks that no file on it was left open."""
    mounted = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"tmpfs-{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    busy = []
    for folder in mounted:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)
            busy.append(folder)
    assert not busy, f"a file was left open on {busy} (a failed writer's file keeps its space taken)"


def test_a_real_full_disk(tmpfs):
    disk = tmpfs("size=12m")  # the synthetic data, config and one 8 MiB checkpoint fit; a second one does not
    with pytest.raises(OutputWriteError) as caught:
        run(tiny_config(1, disk, "max_steps=3", "save_steps=1"))
    message = str(caught.value)
    assert message.startswith(f"{disk}: could not write checkpoint-2: torch.save failed: ")  # its message is cryptic
    assert re.search(r"; not enough space: it needs about [0-9.]+ MiB \(the size of checkpoint-1\), .* \(free [0-9.]+ "
                     r"MiB more\)\. Removed the partial \.checkpoint-2\.tmp; checkpoint-1 is intact$", message), message
    assert not (disk / ".checkpoint-2.tmp").exists()
    assert manifest.verify(disk / "checkpoint-1") == []


def test_a_read_only_output_dir(tmpfs):
    disk = tmpfs("ro,size=1m")
    with pytest.raises(OutputWriteError, match="Read-only file system"):
        run(tiny_config(1, disk / "run"))


def test_only_torch_saves_runtime_errors_count_as_failed_writes(tmp_path):
    with pytest.raises(RuntimeError) as from_torch_save:  # torch reports a failed write as RuntimeError
        torch.save({}, tmp_path / "no-such-folder" / "x.pt")
    assert ckpt.is_write_failure(from_torch_save.value)
    with pytest.raises(RuntimeError) as from_a_collective:  # what a rank sees when another one failed and left
        raise RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer")
    assert not ckpt.is_write_failure(from_a_collective.value)
    assert ckpt.is_write_failure(no_space("x"))
