"""What a complete checkpoint folder holds, and how to check it without torch (no official counterpart:
the official `Trainer` checkpoints carry no record of their own contents).

The last file written into `checkpoint-<step>/`, just before the folder is renamed into place, is
`manifest.json`: every other file's path (relative, `/`-separated), size in bytes and SHA-256:

    {"format": 1, "checksum": "sha256",
     "files": {"engine/latest": {"size": 5, "sha256": "6b86b2..."}, "trainer_state.json": {...}, ...}}

SHA-256 rather than a faster non-cryptographic sum: `hashlib` runs it with the CPU's SHA instructions
(0.9 GiB/s a core here, against 1.4 GiB/s for zlib's CRC-32, which only has 32 bits), it releases the
GIL so a thread pool hashes several files at once, and `sha256sum` can check a file by hand. Writing
the checkpoint costs more than hashing it, and the hashing is split over the ranks.

A folder without a manifest, with a file missing, of another size or with another digest is damaged;
`verify` names each problem and `move_aside` renames the folder out of the way (never deletes it).
Nothing is fsynced: after a node crash a checkpoint whose data had not reached the disk fails this
check and the resume falls back to the one before, which the kernel has long since written out;
syncing every save would instead stall training for the whole checkpoint's write-back. (The smoke
config's 8.2 MiB checkpoint: a 56-72 ms save, 14-17 ms of it hashing; an fsync of each file added 28 ms.)
This module imports no torch, so `owl2 checkpoint verify` starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
"""Version of the manifest layout; another version is reported as a problem, not guessed at."""
CHECKSUM = "sha256"
PATTERN = re.compile(r"^checkpoint-(\d+)$")
"""Name of a checkpoint folder a resume considers (`checkpoint-<step>`)."""
DAMAGED_SUFFIX = ".damaged-"
"""`checkpoint-<step>.damaged-<n>`: a damaged checkpoint moved aside."""
CHUNK_BYTES = 1 << 20
"""Read size while hashing (`hashlib.file_digest` is Python 3.11+)."""
HASH_THREADS = min(8, os.cpu_count() or 1)
"""Files hashed at once (hashlib releases the GIL, so threads scale with cores)."""


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-<step>/` folders of a run folder, oldest first (complete or damaged alike)."""
    found = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*") if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found) if p.is_dir()]


def file_digest(path: Path) -> dict[str, int | str]:
    """`{"size": bytes, "sha256": hex}` of one file."""
    digest = hashlib.new(CHECKSUM)
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while count := f.readinto(buffer):
            digest.update(view[:count])
        size = os.fstat(f.fileno()).st_size
    return {"size": size, CHECKSUM: digest.hexdigest()}


def digest_files(folder: Path, names: Iterable[str]) -> dict[str, dict[str, int | str]]:
    """`file_digest` of each `folder/name`, several files at once."""
    names = list(names)
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        return dict(zip(names, pool.map(lambda name: file_digest(folder / name), names)))


def list_files(folder: Path) -> dict[str, int]:
    """Every file under `folder` but the manifest: relative `/`-separated path -> size."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name != MANIFEST_FILE:
            files[name] = path.stat().st_size
    return files


def write_manifest(folder: Path, files: dict[str, dict[str, int | str]]) -> Path:
    """Write `folder/manifest.json` from `digest_files` entries."""
    path = folder / MANIFEST_FILE
    body = {"format": MANIFEST_FORMAT, "checksum": CHECKSUM, "files": dict(sorted(files.items()))}
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: Path) -> dict[str, dict[str, int | str]]:
    """The `files` table of `folder/manifest.json`.

    Raises:
        ValueError: Naming the manifest, if it is missing, not JSON, or not the layout `write_manifest` writes.
    """
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: no {MANIFEST_FILE}; a complete checkpoint ends with one (the save was cut "
                         "short, the file was removed, or an owl2 without manifests wrote it)")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected the manifest owl2 writes") from None
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or body.get("format") != MANIFEST_FORMAT or body.get("checksum") != CHECKSUM:
        raise ValueError(f"{path}: expected {{\"format\": {MANIFEST_FORMAT}, \"checksum\": \"{CHECKSUM}\", "
                         "\"files\": {...}}")
    for name, entry in files.items():
        well_formed = isinstance(entry, dict) and isinstance(entry.get("size"), int)
        well_formed = well_formed and isinstance(entry.get(CHECKSUM), str)
        inside = not Path(name).is_absolute() and ".." not in Path(name).parts
        if not well_formed or not inside:
            raise ValueError(f"{path}: bad entry {name!r}; expected a relative path -> {{\"size\": int, "
                             f"\"{CHECKSUM}\": hex}}")
    return files


def verify(folder: str | Path) -> list[str]:
    """Check a checkpoint folder against its manifest; one message per problem, none if it is complete.

    Sizes are checked first (a truncated file costs no hashing); the files of the right size are then hashed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: not a folder"]
    try:
        files = read_manifest(folder)
    except ValueError as e:
        return [str(e)]
    if not files:
        return [f"{folder / MANIFEST_FILE}: lists no file; expected the engine state and trainer_state.json"]
    problems, to_hash = [], []
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing; the manifest lists {entry['size']} bytes")
        elif (size := path.stat().st_size) != entry["size"]:
            problems.append(f"{path}: {size} bytes; the manifest says {entry['size']} (truncated or overwritten)")
        else:
            to_hash.append(name)
    for name, entry in digest_files(folder, to_hash).items():
        if entry[CHECKSUM] != files[name][CHECKSUM]:
            problems.append(f"{folder / name}: {CHECKSUM} differs from the manifest's; the file changed after it "
                            "was written")
    return problems


def manifest_size(folder: Path) -> int | None:
    """Bytes a checkpoint takes according to its manifest (None without a readable one)."""
    try:
        return sum(int(entry["size"]) for entry in read_manifest(folder).values())
    except ValueError:
        return None


def move_aside(folder: Path) -> Path:
    """Rename a damaged `checkpoint-<step>` to the first free `checkpoint-<step>.damaged-<n>` (n from 1)."""
    n = 1
    while (aside := folder.with_name(f"{folder.name}{DAMAGED_SUFFIX}{n}")).exists():
        n += 1
    folder.rename(aside)
    return aside


def format_bytes(count: int | float) -> str:
    """`8.3 MiB`-style size for messages."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while abs(count) >= 1024 and power < len(units) - 1:
        count, power = count / 1024, power + 1
    return f"{count:.0f} bytes" if power == 0 else f"{count:.1f} {units[power]}"
