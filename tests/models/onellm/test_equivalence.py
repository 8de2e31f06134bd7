"""owl2's universal encoder + UPM against a functional restatement of the official forward, for every modality.

The reference (`official_reference.py`) reads the release's key names, so `release_state_dict` (the key
map of `owl2.models.upm`, restated) is exercised too. float32 on CPU; tolerances are explicit.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.models.onellm import official_reference as ref
from tests.models.onellm.conftest import ALL, TOY, toy_encoder, toy_inputs, toy_projection

TOL = dict(rtol=1e-5, atol=1e-5)
"""float32: the two sides differ only in summation order (fused vs plain attention, matmul blocking)."""


def _release(encoder, upm) -> dict[str, torch.Tensor]:
    return ref.release_state_dict(encoder.state_dict(), upm.state_dict())


def test_the_key_map_is_one_to_one_onto_the_release_tensors():
    encoder, upm = toy_encoder(), toy_projection()
    ours = [*encoder.state_dict(), *upm.state_dict()]
    release = _release(encoder, upm)
    tokens = {m: encoder.tokenizer_config.num_tokens(m) for m in ref.OWN_TABLE}
    expected = ref.release_shapes(TOY, ALL, tokens, grid=TOY.image_size // TOY.patch_size)
    assert len(release) == len(ours)  # no two owl2 tensors land on the same release key
    assert set(release) == set(expected) - {ref.L + "clip.visual.proj"}  # only CLIP's unused projection is left
    assert {k: tuple(v.shape) for k, v in release.items()} == {k: expected[k] for k in release}


@pytest.mark.parametrize("modality", ALL)
def test_encoder_matches_the_official_clip_encode(modality):
    encoder, upm = toy_encoder(point_sample_on="rgb"), toy_projection()
    x = toy_inputs(modality)
    with torch.no_grad():
        ours = encoder(x, modality)
        theirs = ref.encode_features(_release(encoder, upm), x, modality, TOY)
    assert ours.shape == (2, encoder.num_tokens(modality), TOY.clip_width)
    assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("modality", ALL)
def test_encoder_and_upm_match_the_official_modality_block(modality):
    encoder, upm = toy_encoder(point_sample_on="rgb"), toy_projection()
    x = toy_inputs(modality, seed=3)
    with torch.no_grad():
        ours = upm.embed_with_tags(encoder(x, modality), modality)
        sd = _release(encoder, upm)
        theirs = ref.with_tags(sd, ref.project(sd, ref.encode_features(sd, x, modality, TOY), modality, TOY), modality)
    assert ours.shape == (2, TOY.modality_tokens + 2, TOY.llm_width)
    assert_close(ours, theirs, **TOL)


def test_points_sampled_on_xyz_match_the_official_tokenizer_run_on_xyz():
    encoder, upm = toy_encoder(point_sample_on="xyz"), toy_projection()
    x = toy_inputs("point", seed=5)
    with torch.no_grad():
        ours = encoder(x, "point")
        theirs = ref.encode_features(_release(encoder, upm), x, "point", TOY, point_columns=slice(0, 3))
    assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_upm_matches_the_official_projection_with_either_router(activation):
    encoder, upm = toy_encoder(), toy_projection(router_activation=activation)
    features = torch.randn(3, 11, TOY.clip_width, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = upm(features, "audio")
        theirs = ref.project(_release(encoder, upm), features, "audio", TOY, activation=activation)
    assert_close(ours, theirs, **TOL)
