"""Inference-time rewrites of a loaded network that leave its outputs unchanged (to float rounding).

A manifest may ask for them under `"inference": {"fold_batchnorm": bool, "channels_last": bool}`;
the choice for each model is measured (`python -m bench.imagenet --forward`) and recorded at
registration. The original module is kept for layer summaries and parameter counts; these rewrites
only produce the module that runs requests.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)
INFERENCE_OPTIONS = ("fold_batchnorm", "channels_last")


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """A copy of `network` (eval mode) with each BatchNorm that directly follows a convolution folded into it.

    Pairs come from a network's own `conv_bn_pairs()` (names of (conv, bn) sub-modules, see
    EfficientNetLite) and from consecutive Conv2d, BatchNorm2d children of every nn.Sequential
    (torchvision's Conv2dNormActivation, VGG-BN, ...). No tracing: torch.fx patches
    `nn.Module.__call__` process-wide while it traces, which breaks inference running in other threads.
    """
    folded = copy.deepcopy(network).eval()
    pairs: list[tuple[str, str]] = []
    for prefix, module in folded.named_modules():
        dotted = f"{prefix}." if prefix else ""
        if hasattr(module, "conv_bn_pairs"):
            pairs += [(dotted + conv, dotted + bn) for conv, bn in module.conv_bn_pairs()]
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            pairs += [(dotted + a, dotted + b) for (a, first), (b, second) in zip(children, children[1:])
                      if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d)]
    for conv_name, bn_name in dict.fromkeys(pairs):
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats):
            continue
        _replace(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _replace(folded, bn_name, nn.Identity())
    if not pairs:
        log.info("no conv + batch-norm pairs to fold in %s", type(network).__name__)
    return folded


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


class ChannelsLast(nn.Module):
    """Runs `inner` (already converted) on inputs in channels-last memory format (faster CPU convolutions)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def inference_module(network: nn.Module, options: dict[str, Any] | None) -> nn.Module:
    """The module that serves requests for `network` under manifest `options` (the network itself when none)."""
    options = options or {}
    unknown = set(options) - set(INFERENCE_OPTIONS)
    if unknown:
        raise ValueError(f"unknown inference options {sorted(unknown)}; valid: {', '.join(INFERENCE_OPTIONS)}")
    runner = network.eval()
    if options.get("fold_batchnorm"):
        runner = fold_batchnorm(runner)
    if options.get("channels_last"):
        runner = ChannelsLast(runner if runner is not network else copy.deepcopy(network))
    return runner.eval()
