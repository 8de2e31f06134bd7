"""The picture sheet of `owl2 demo --recipe onellm`: held-out examples of one OneLLM modality, each drawn
as a picture, with its question, the expected answer and the model's reply. No official counterpart.

What a cell shows: image, the image; rgbd and rgbn, the image and its depth or normal map side by side;
video, four frames evenly spaced; audio, the log mel spectrogram (Kaldi fbank, `owl2.processing.media.fbank`);
point, the cloud seen from above (x against y, in the points' colours); imu, the six channels against the
sample index (the accelerometer above, the gyroscope below); fmri, the voxel values as a heat strip, one row
per repeat. The files are those `owl2.data.synthetic_media` writes. Drawn through `report._pyplot`
(matplotlib's Agg backend, nothing opens a window).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from owl2.demo.report import _pyplot

FRAMES = 4
"""Video frames shown per cell, evenly spaced over the clip."""
MEL_BINS = 64
"""Mel bins of the audio cells' spectrogram (128, the release's, leaves an empty bin at 16 kHz)."""
LOG_RANGE = 12.0
"""Natural-log range of the spectrogram's colour scale below its maximum (about 52 dB)."""
GAP = 2
"""White pixels between the pictures joined in one cell."""


def _file(path) -> Path:
    """`path` as a `Path`, if it is an existing file."""
    if not isinstance(path, (str, Path)):
        raise ValueError(f"expected a file path, got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    return path


def _read(path, read: Callable[[Path], np.ndarray]) -> np.ndarray:
    """`read(path)`, any failure a `ValueError` naming the file."""
    path = _file(path)
    try:
        return read(path)
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: cannot read ({error})") from error
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read ({error})") from error


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _npy(path: Path) -> np.ndarray:
    return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)


def _side_by_side(pictures: list[np.ndarray]) -> np.ndarray:
    """RGB uint8 pictures joined left to right, each scaled to the first one's height, `GAP` white between."""
    height = pictures[0].shape[0]
    parts = []
    for picture in pictures:
        if picture.shape[0] != height:
            width = max(1, round(picture.shape[1] * height / picture.shape[0]))
            picture = np.asarray(Image.fromarray(picture).resize((width, height), Image.NEAREST))
        if parts:
            parts.append(np.full((height, GAP, 3), 255, dtype=np.uint8))
        parts.append(picture)
    return np.concatenate(parts, axis=1)


def _load_pair(value) -> np.ndarray:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"expected an (image, map) pair of paths, got {value!r}")
    return _side_by_side([_read(p, _png) for p in value])


def _load_video(value) -> np.ndarray:
    from owl2.processing.media.decode import read_video_frames

    def choose(count: int, rate: float) -> list[int]:
        return [int(i) for i in np.linspace(0, count - 1, min(FRAMES, count)).round()]

    frames = _read(value, lambda path: read_video_frames(path, choose))  # (K, H, W, 3)
    return _side_by_side(list(frames))


def _load_audio(value) -> np.ndarray:
    import torch

    from owl2.processing.media.audio import read_audio_file
    from owl2.processing.media.fbank import fbank

    def spectrogram(path: Path) -> np.ndarray:
        samples, rate = read_audio_file(path)  # (C, T)
        if samples.shape[1] == 0:
            raise ValueError(f"{path}: empty audio")
        features = fbank(torch.from_numpy(np.ascontiguousarray(samples[0])), rate, MEL_BINS)  # (frames, mel)
        if features.shape[0] == 0:
            raise ValueError(f"{path}: {samples.shape[1]} samples, shorter than one 25 ms frame")
        return features.T.numpy()  # (mel, frames)

    return _read(value, spectrogram)


def _load_point(value) -> np.ndarray:
    cloud = _read(value, _npy)
    if cloud.ndim != 2 or cloud.shape[1] < 3:
        raise ValueError(f"{value}: point cloud of shape {cloud.shape}; expected (points, 6) xyz + rgb")
    return cloud


def _load_imu(value) -> np.ndarray:
    data = _read(value, _npy)
    if data.ndim == 2 and data.shape[0] != 6 and data.shape[1] == 6:
        data = data.T
    if data.ndim != 2:
        raise ValueError(f"{value}: IMU of shape {data.shape}; expected (6, samples)")
    return data


def _load_fmri(value) -> np.ndarray:
    data = _read(value, _npy)
    if data.ndim not in (1, 2):
        raise ValueError(f"{value}: fMRI of shape {data.shape}; expected (voxels,) or (repeats, voxels)")
    return np.atleast_2d(data)


def _draw_picture(ax, picture: np.ndarray) -> None:
    ax.imshow(picture)


def _draw_audio(ax, spectrogram: np.ndarray) -> None:
    top = float(spectrogram.max())
    ax.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", vmin=top - LOG_RANGE, vmax=top)
    ax.axis("on")
    ax.set_xlabel("time (10 ms frames)", fontsize=7)
    ax.set_ylabel("mel bin", fontsize=7)
    ax.tick_params(labelsize=6)


def _draw_point(ax, cloud: np.ndarray) -> None:
    if cloud.shape[1] >= 6:
        colors = cloud[:, 3:6]
        colors = np.clip(colors / 255 if colors.max() > 1 else colors, 0, 1)
    else:
        colors = "tab:blue"
    ax.scatter(cloud[:, 0], cloud[:, 1], c=colors, s=2, linewidths=0)
    ax.set_aspect("equal", adjustable="datalim")
    ax.axis("on")
    ax.set_xlabel("x", fontsize=7)
    ax.set_ylabel("y", fontsize=7)
    ax.tick_params(labelsize=6)


def _draw_imu(ax, data: np.ndarray) -> None:
    """The accelerometer above, the gyroscope below (their scales differ by a thousand), x y z in red green blue."""
    steps = np.arange(data.shape[1])
    colors = ("tab:red", "tab:green", "tab:blue")
    parts = [(range(0, min(3, len(data))), "acc (m/s²)"), (range(3, min(6, len(data))), "gyro (rad/s)")]
    boxes = ([0.0, 0.56, 1.0, 0.44], [0.0, 0.0, 1.0, 0.44])
    for (channels, label), box in zip(parts, boxes):
        if not channels:
            continue
        inset = ax.inset_axes(box)
        for channel in channels:
            inset.plot(steps, data[channel], color=colors[channel % 3], linewidth=1, label="xyz"[channel % 3])
        inset.set_ylabel(label, fontsize=7)
        inset.tick_params(labelsize=6)
        inset.margins(x=0)
        if channels[0] == 0:
            inset.legend(fontsize=5, ncol=3, loc="best", handlelength=1)
            inset.tick_params(labelbottom=False)
    ax.text(0.5, -0.12, "sample", transform=ax.transAxes, ha="center", va="top", fontsize=7)


def _draw_fmri(ax, data: np.ndarray) -> None:
    ax.imshow(data, aspect="auto", cmap="coolwarm", interpolation="nearest")
    ax.axis("on")
    ax.set_xlabel("voxel", fontsize=7)
    ax.set_ylabel("repeat", fontsize=7)
    ax.set_yticks(range(data.shape[0]))
    ax.tick_params(labelsize=6)


MODALITIES: dict[str, tuple[Callable, Callable]] = {
    "image": (lambda value: _read(value, _png), _draw_picture),
    "rgbd": (_load_pair, _draw_picture),
    "rgbn": (_load_pair, _draw_picture),
    "video": (_load_video, _draw_picture),
    "audio": (_load_audio, _draw_audio),
    "point": (_load_point, _draw_point),
    "imu": (_load_imu, _draw_imu),
    "fmri": (_load_fmri, _draw_fmri),
}
"""Modality -> (read an item's `input` into an array, draw that array on a cell's axes)."""


def media_sheet(modality: str, items: list[dict], path: Path, columns: int = 4) -> Path:
    """A grid of held-out inputs of one modality with their question, the expected answer and the model's reply.

    Args:
        modality: One of `MODALITIES`.
        items: `{"input": Path | (Path, Path), "question": str, "answer": str, "reply": str, "correct": bool}`
            each; the input is an `(image, map)` pair for rgbd and rgbn, one file otherwise.
        path: The PNG to write.
        columns: Cells per row.

    Raises:
        ValueError: For an unknown modality, or an input file that is missing or cannot be read (naming it).
    """
    if modality not in MODALITIES:
        raise ValueError(f"media_sheet: unknown modality {modality!r}; expected one of {tuple(MODALITIES)}")
    load, draw = MODALITIES[modality]
    arrays = [load(item["input"]) for item in items]  # every file read before a figure is opened
    plt = _pyplot()
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item, array in zip(axes.flat, items, arrays):
        draw(ax, array)
        mark = "right" if item["correct"] else "WRONG"
        ax.set_title(
            f"{item['question']}\nexpected: {item['answer']}\nmodel: {item['reply'] or '(nothing)'}  [{mark}]",
            fontsize=8,
            color="darkgreen" if item["correct"] else "firebrick",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
