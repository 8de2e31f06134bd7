"""Validation of data records and their images, shared by `owl2 data check` and training.

No official counterpart: the official `LazySupervisedDataset` silently swaps a missing image for a
random other sample and crashes with a traceback on anything else. Here every problem is a
`RecordError` with the record's location and a reason, e.g. `line 7: image 'a.png' not found`.

A record is good when: it is a JSON object; it has `conversations` (a non-empty list of
`{from: human|gpt, value: str}`, alternating and starting with a human turn once a leading
non-human turn is dropped, as the official code does) or a `caption` string; its `image` is
absent, a relative path or a list of them, each inside the image folder and a readable, complete
image under Pillow's decompression-bomb limit; and the text has one `<|image|>` per image.

OneLLM's other modalities are keys of their own beside `image`, each a path or a list of paths:
`video`, `audio`, `point`, `imu`, `fmri`; and `rgbd`, `rgbn`, each a pair `[image, map]` or a list of
pairs. Each input needs its placeholder (`<|audio|>` ...) in the text, and is decoded by its loader
(`owl2.processing.media`, imported only when a record has such an input). (The release's records name
every modality's file `image` and tell them apart by `data_type`, with `depth_image` / `normal_image`
beside it: one modality per record.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from owl2.data.records import RecordError, RecordFile
from owl2.processing.media.config import MediaConfig
from owl2.processing.image_file import load_image
from owl2.processing.templates import ASSISTANT, PLACEHOLDERS, USER

PAIRED_MODALITIES = ("rgbd", "rgbn")
"""Modalities whose one input is two files: the RGB image and its depth or normal map."""

InputName = str | tuple[str, str]
"""One input as a record names it: a relative path, or a pair of them (`PAIRED_MODALITIES`)."""
InputPath = Path | tuple[Path, Path]
"""One input resolved inside the folder."""

ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}
"""Record role names (`from`) and the template role each maps to."""


@dataclass
class Sample:
    """A validated record: its messages and the image paths, in order."""

    id: str
    """The record's `id` (its location when it has none)."""
    messages: list[dict[str, str]]
    """`{"role": "user"|"assistant", "content": str}`, alternating, starting with the user."""
    images: list[Path]
    """Absolute image paths, in order of their placeholders."""
    image_names: list[str]
    """The paths as the record wrote them (for messages)."""
    inputs: dict[str, list[InputPath]] = field(default_factory=dict)
    """Every modality's inputs (images included), resolved, in order of their placeholders."""
    input_names: dict[str, list[InputName]] = field(default_factory=dict)
    """The same inputs as the record wrote them (for messages)."""


def record_messages(record: dict) -> list[dict[str, str]]:
    """Messages of a record: its `conversations`, or a caption record's stage-1 exchange.

    A caption record becomes a user turn holding only `<|image|>` per image and an assistant turn
    holding the caption (the official stage-1 layout: image, caption, end of sequence).

    Raises:
        ValueError: With the reason the conversation is malformed.
    """
    if "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list) or not turns:
            raise ValueError("'conversations' must be a non-empty list")
        messages = []
        for k, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise ValueError(f"conversations[{k}] must be an object, got {type(turn).__name__}")
            role = turn.get("from")
            if role not in ROLES:
                raise ValueError(f"conversations[{k}]: 'from' must be one of {sorted(ROLES)}, got {role!r}")
            value = turn.get("value")
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"conversations[{k}]: 'value' must be a non-empty string")
            messages.append({"role": ROLES[role], "content": value})
        if messages[0]["role"] != USER:
            messages = messages[1:]  # the official preprocess drops a leading assistant turn too
        for k, message in enumerate(messages):
            if message["role"] != (USER if k % 2 == 0 else ASSISTANT):
                raise ValueError(f"turns must alternate human/gpt; turn {k} is {message['role']!r} twice in a row")
        if not any(m["role"] == ASSISTANT for m in messages):
            raise ValueError("no gpt turn to learn from")
        return messages
    if "caption" in record:
        caption = record["caption"]
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError("'caption' must be a non-empty string")
        inputs = record_inputs(record)
        if not inputs:
            raise ValueError("a caption record needs an 'image' (or another modality's input)")
        content = "".join(PLACEHOLDERS[modality] * len(names) for modality, names in inputs.items())
        return [{"role": USER, "content": content}, {"role": ASSISTANT, "content": caption}]
    raise ValueError("expected 'conversations' or 'caption'")


def record_image_names(record: dict) -> list[str]:
    """The record's `image` field as a list (empty if absent).

    Raises:
        ValueError: If `image` is neither a string nor a list of strings.
    """
    image = record.get("image")
    if image is None:
        return []
    names = [image] if isinstance(image, str) else image
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError("'image' must be a path or a list of paths")
    return names


def record_input_names(record: dict, modality: str) -> list[InputName]:
    """The record's inputs of `modality` (its key) as a list (empty if absent).

    Raises:
        ValueError: If the key holds neither a path nor a list of paths (a pair, or a list of pairs, for
            `PAIRED_MODALITIES`).
    """
    if modality == "image":
        return record_image_names(record)
    value = record.get(modality)
    if value is None:
        return []
    if modality in PAIRED_MODALITIES:
        def is_pair(item) -> bool:
            return isinstance(item, list) and len(item) == 2 and all(isinstance(n, str) and n for n in item)

        pairs = [value] if is_pair(value) else value
        if not isinstance(pairs, list) or not pairs or not all(is_pair(p) for p in pairs):
            raise ValueError(f"'{modality}' must be a pair [image, map] of paths or a list of such pairs")
        return [tuple(pair) for pair in pairs]
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"'{modality}' must be a path or a list of paths")
    return names


def record_inputs(record: dict) -> dict[str, list[InputName]]:
    """Every modality's inputs in the record, by modality (only those it has), in `PLACEHOLDERS` order."""
    inputs = {modality: record_input_names(record, modality) for modality in PLACEHOLDERS}
    return {modality: names for modality, names in inputs.items() if names}


def resolve_image_path(image_folder: str | Path, name: str, what: str = "image") -> Path:
    """The path of file `name` inside `image_folder`, refusing anything that leaves it.

    Args:
        image_folder: The folder the data's paths are relative to.
        name: The path as the record wrote it.
        what: What the file is, for messages ("image", "audio").

    Raises:
        ValueError: For an absolute path, a `..` component, or a symlink resolving outside the folder.
    """
    if os.path.isabs(name) or Path(name).is_absolute():
        raise ValueError(f"{what} {name!r} is an absolute path; expected a path relative to the image folder")
    if ".." in Path(name).parts:
        raise ValueError(f"{what} {name!r} contains '..'; expected a path inside the image folder")
    folder = Path(image_folder).resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder):
        raise ValueError(f"{what} {name!r} resolves to {path}, outside the image folder {folder}")
    return path


def resolve_input(folder: str | Path, modality: str, name: InputName) -> InputPath:
    """`resolve_image_path` of one input of `modality` (each file of a pair)."""
    if isinstance(name, tuple):
        return tuple(resolve_image_path(folder, n, what=modality) for n in name)
    return resolve_image_path(folder, name, what=modality)


def check_placeholders(text: str, inputs: Mapping[str, Sequence]) -> None:
    """Check that `text` holds one placeholder of each modality per input of it.

    Raises:
        ValueError: Naming the first modality whose counts differ, e.g. `0 <|audio|> placeholders but 1 audio inputs`.
    """
    for modality, placeholder in PLACEHOLDERS.items():
        count, given = text.count(placeholder), len(inputs.get(modality, ()))
        if count != given:
            what = "images" if modality == "image" else f"{modality} inputs"
            raise ValueError(f"{count} {placeholder} placeholders but {given} {what}")


def check_input(modality: str, path: InputPath, name: InputName, media_config: MediaConfig | None = None) -> None:
    """Decode one input the way the model's loader will (with `media_config`, default the release's sizes).

    Raises:
        ValueError: Naming the file and what was expected (missing, unreadable, wrong shape, NaN ...).
    """
    if modality == "image":
        load_image(path, name).close()
        return
    from owl2.processing.media import OneLLMMediaProcessor  # torch: only for records that have such inputs

    OneLLMMediaProcessor(media_config).load(modality, path)


def validate_record(
    record: dict,
    location: str,
    image_folder: str | Path | None,
    load: bool = True,
    media_config: MediaConfig | None = None,
) -> Sample:
    """Check one record and return its messages and image paths.

    Args:
        record: The parsed record.
        location: `line N` or `record N`, for the error.
        image_folder: Folder image paths are relative to; required if the record has images.
        load: Also decode every input (off when the caller decodes them anyway).
        media_config: The sizes OneLLM's inputs are checked against (default: the release's).

    Raises:
        RecordError: With `location` and the first problem found.
    """
    try:
        names = record_inputs(record)
        messages = record_messages(record)
        check_placeholders("\n".join(m["content"] for m in messages), names)
        if names and image_folder is None:
            raise ValueError("the record has inputs (images ...) but no image folder was given")
        paths = {m: [resolve_input(image_folder, m, n) for n in modality_names] for m, modality_names in names.items()}
        if load:
            for modality, modality_names in names.items():
                for path, name in zip(paths[modality], modality_names):
                    check_input(modality, path, name, media_config)
    except ValueError as e:
        raise RecordError(location, str(e)) from None
    return Sample(
        id=str(record.get("id", location)),
        messages=messages,
        images=paths.get("image", []),
        image_names=names.get("image", []),
        inputs=paths,
        input_names=names,
    )


@dataclass(frozen=True)
class Problem:
    """One bad record."""

    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


def iter_problems(
    records: RecordFile, image_folder: str | Path | None, media_config: MediaConfig | None = None
) -> Iterator[Problem]:
    """Read every record and image of `records` and yield one `Problem` per bad record.

    Args:
        records: The opened data file.
        image_folder: Folder image paths are relative to.
        media_config: The sizes OneLLM's inputs are checked against (default: the release's).
    """
    for index in range(len(records)):
        try:
            validate_record(records[index], records.location(index), image_folder, media_config=media_config)
        except RecordError as e:
            yield Problem(e.location, e.reason)
