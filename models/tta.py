"""Test-time augmentation (TTA): a classifier's probabilities averaged over views of each input.

A version asks for it in its preprocessing preset, `"tta": MODE` (`models.image_presets.rgb_preset(tta=)`);
no key means none. Serving (`models.runtime.LoadedModel.predict_proba`) and the trainers' scoring both
call `class_probabilities`, so a manifest's metrics are those of the predictions the service returns.
Every mode runs all its views of N inputs in ONE forward pass (the inputs first, then each view's copies),
so a version with k views costs about k inputs' time. Modes (`TTA_VIEWS`):
- "hflip": the input and its horizontal mirror (photos of scenes, whose left and right are alike);
- "flips": the input, its horizontal and vertical mirrors and both (a 180° turn): objects photographed from
  above, lying any way up (electronic components on a bench).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _hflip(batch: torch.Tensor) -> torch.Tensor:
    return batch.flip(-1)


def _vflip(batch: torch.Tensor) -> torch.Tensor:
    return batch.flip(-2)


def _turn(batch: torch.Tensor) -> torch.Tensor:
    return batch.flip(-2, -1)


# mode -> the views besides the input itself (functions of an NCHW batch)
TTA_VIEWS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "hflip": (_hflip,),
    "flips": (_hflip, _vflip, _turn),
}
TTA_MODES = tuple(TTA_VIEWS)
TTA_KEY = "tta"  # the preset key


def tta_mode(preprocessing: dict[str, Any]) -> str | None:
    """The TTA mode the preset `preprocessing` names (None: plain predictions); `ValueError` for an unknown one."""
    mode = preprocessing.get(TTA_KEY)
    if mode is not None and mode not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {mode!r}; valid: {', '.join(TTA_MODES)}")
    return mode


def class_probabilities(runner: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
                        mode: str | None) -> torch.Tensor:
    """Softmax probabilities (N x classes, float32, on `batch`'s device) of `runner` on the NCHW `batch`
    under TTA `mode` (None: the plain softmax of one pass): the mean of the softmax over the mode's views."""
    if mode is None:
        return torch.softmax(runner(batch).float(), dim=1)
    if mode not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {mode!r}; valid: {', '.join(TTA_MODES)}")
    views = TTA_VIEWS[mode]
    count = batch.shape[0]
    probabilities = torch.softmax(runner(torch.cat([batch, *(view(batch) for view in views)])).float(), dim=1)
    return probabilities.view(1 + len(views), count, -1).mean(dim=0)
