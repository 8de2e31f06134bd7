"""Media files to OneLLM's model inputs, by the release's preprocessing (official `data/*.py`, `eval/*.py`).

One module per modality (`image`, `video`, `audio`, `point`, `imu`, `fmri`, and `rgbx` for rgbd and rgbn), each
with a `load_*` of a file and a `transform_*` of decoded data. `fbank.fbank` (Kaldi's filterbank) and
`resample.resample` (torchaudio's sinc resampler) are plain torch; `decode` is the one module that imports PyAV.
`MediaConfig` holds every size and constant, `OneLLMMediaProcessor` dispatches, `MediaError` is every bad file;
those three and `MEDIA_SUFFIXES` import without torch.
"""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "MediaError": "owl2.processing.media.errors",
    "MediaConfig": "owl2.processing.media.config",
    "MEDIA_SUFFIXES": "owl2.processing.media.config",
    "OneLLMMediaProcessor": "owl2.processing.media.processor",
    "load_image": "owl2.processing.media.image",
    "transform_image": "owl2.processing.media.image",
    "load_video": "owl2.processing.media.video",
    "transform_video": "owl2.processing.media.video",
    "load_audio": "owl2.processing.media.audio",
    "transform_audio": "owl2.processing.media.audio",
    "load_point": "owl2.processing.media.point",
    "transform_points": "owl2.processing.media.point",
    "load_imu": "owl2.processing.media.imu",
    "transform_imu": "owl2.processing.media.imu",
    "load_fmri": "owl2.processing.media.fmri",
    "transform_fmri": "owl2.processing.media.fmri",
    "load_rgbx": "owl2.processing.media.rgbx",
    "transform_rgbx": "owl2.processing.media.rgbx",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
