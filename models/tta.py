"""Test-time augmentation (TTA): a classifier's probabilities averaged over views of each input.

A version asks for it in its preprocessing preset, `"tta": MODE` (`models.image_presets.rgb_preset(tta=)`);
no key means none. Serving (`models.runtime.LoadedModel.predict_proba`) and the trainers' scoring both
call `class_probabilities`, so a manifest's metrics are those of the predictions the service returns.
Modes:
- "hflip": the mean of the softmax of the input and of its horizontal mirror, both in ONE forward pass
  of 2N inputs (the input first, then the mirrors), so a version with it costs about two inputs' time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

TTA_MODES = ("hflip",)
TTA_KEY = "tta"  # the preset key


def tta_mode(preprocessing: dict[str, Any]) -> str | None:
    """The TTA mode the preset `preprocessing` names (None: plain predictions); `ValueError` for an unknown one."""
    mode = preprocessing.get(TTA_KEY)
    if mode is not None and mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; valid: {', '.join(TTA_MODES)}")
    return mode


def class_probabilities(runner: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
                        mode: str | None) -> torch.Tensor:
    """Softmax probabilities (N x classes, float32, on `batch`'s device) of `runner` on the NCHW `batch`
    under TTA `mode` (None: the plain softmax of one pass)."""
    if mode is None:
        return torch.softmax(runner(batch).float(), dim=1)
    if mode == "hflip":
        count = batch.shape[0]
        both = torch.softmax(runner(torch.cat([batch, batch.flip(-1)])).float(), dim=1)
        return (both[:count] + both[count:]) * 0.5
    raise ValueError(f"unknown test-time augmentation {mode!r}; valid: {', '.join(TTA_MODES)}")
