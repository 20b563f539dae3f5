"""Test-time augmentation (`models.tta`): the flip averages, and presets that name an unknown mode."""

from __future__ import annotations

import pytest
import torch

from models.image_presets import rgb_preset
from models.registry import InvalidManifestError, ModelRegistry
from models.registry.schema import parse_manifest
from models.tta import class_probabilities, tta_mode


def left_minus_right(batch: torch.Tensor) -> torch.Tensor:
    """Logits that tell an input from its mirror: (left half - right half, 0) per sample."""
    half = batch.shape[-1] // 2
    score = batch[..., :half].sum(dim=(1, 2, 3)) - batch[..., half:].sum(dim=(1, 2, 3))
    return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_hflip_averages_the_softmax_of_the_input_and_its_mirror():
    batch = torch.zeros(2, 1, 2, 4)
    batch[0, ..., :2] = 1.0  # bright left half: logit +4 plain, -4 mirrored
    batch[1] = 0.5  # symmetric
    plain = class_probabilities(left_minus_right, batch, None)
    flipped = class_probabilities(left_minus_right, batch, "hflip")
    assert plain[0, 0] > 0.98 and torch.allclose(plain[1], torch.tensor([0.5, 0.5]))
    expected = (torch.softmax(torch.tensor([4.0, 0.0]), 0) + torch.softmax(torch.tensor([-4.0, 0.0]), 0)) / 2
    assert torch.allclose(flipped[0], expected) and torch.allclose(flipped[1], torch.tensor([0.5, 0.5]))
    assert torch.allclose(flipped.sum(dim=1), torch.ones(2))


def top_minus_bottom(batch: torch.Tensor) -> torch.Tensor:
    """Logits that tell an input from its upside-down copy: (top half - bottom half, 0) per sample."""
    return left_minus_right(batch.transpose(-1, -2))


def test_flips_average_the_four_mirror_images():
    batch = torch.zeros(1, 1, 4, 4)
    batch[..., :2, :2] = 1.0  # bright top-left quarter
    logits = lambda x: left_minus_right(x) + top_minus_bottom(x)  # noqa: E731
    flipped = class_probabilities(logits, batch, "flips")
    # the views score +8 (as is), 0 (either mirror: one half moves) and -8 (turned): their softmaxes' mean
    views = torch.tensor([[8.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-8.0, 0.0]])
    assert torch.allclose(flipped[0], torch.softmax(views, 1).mean(0))
    assert torch.allclose(flipped[0], torch.tensor([0.5, 0.5]), atol=1e-6)


def test_presets_name_only_known_modes(store):
    assert "tta" not in rgb_preset(224, 256, [0.5] * 3, [0.5] * 3), "no key without TTA: older manifests unchanged"
    assert rgb_preset(224, 256, [0.5] * 3, [0.5] * 3, tta="hflip")["tta"] == "hflip"
    assert tta_mode({}) is None
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rot90'; valid: hflip, flips"):
        rgb_preset(224, 256, [0.5] * 3, [0.5] * 3, tta="rot90")
    stored = ModelRegistry(store).manifest("imagenet").stored()
    with pytest.raises(InvalidManifestError, match="preprocessing.tta 'rot90' is not a test-time augmentation"):
        parse_manifest({**stored, "preprocessing": {**stored["preprocessing"], "tta": "rot90"}})
    assert parse_manifest({**stored, "preprocessing": {**stored["preprocessing"], "tta": "hflip"}})
