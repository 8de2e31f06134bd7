"""OneLLM's modality tokenizers (paper appendix C.1; official `onellm.py`, `Transformer.conv1`; `lib/point_utils.py`).

Each turns one kind of signal into a sequence of CLIP-width tokens, which the universal encoder
(`owl2.models.universal_encoder`) then runs through CLIP with a position table of its own. Images,
video frames and depth/normal maps need none: they go through CLIP's own patch embedding.
"""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "AudioTokenizer": "owl2.models.modality.audio",
    "FmriTokenizer": "owl2.models.modality.fmri",
    "ImuTokenizer": "owl2.models.modality.imu",
    "PointTokenizer": "owl2.models.modality.point",
    "farthest_point_sample": "owl2.models.modality.point",
    "knn_indices": "owl2.models.modality.point",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
