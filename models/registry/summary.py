"""A layer-by-layer summary of a network (like Keras `summary()`), from one dummy forward pass."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def layer_summary(network: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Run `example` (a batch of one, e.g. from `models.preprocessing.example_input`) through
    `network` and record each leaf layer.

    Returns {"input_shape", "layers": [{name, type, output_shape, parameters}], "total_parameters",
    "trainable_parameters"}. Output shapes include the batch dimension as -1.
    """
    rows: list[dict[str, Any]] = []
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                output = output[0]  # recurrent layers return (outputs, state): show the outputs
            shape = list(output.shape) if isinstance(output, torch.Tensor) else None
            if shape:
                shape[0] = -1
            rows.append(
                {
                    "name": name,
                    "type": type(module).__name__,
                    "output_shape": shape,
                    "parameters": sum(p.numel() for p in module.parameters(recurse=False)),
                }
            )

        return hook

    for name, module in network.named_modules():
        if name and not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(record(name)))
    try:
        device = next((p.device for p in network.parameters()), torch.device("cpu"))
        with torch.inference_mode():
            network(example.to(device))
    finally:
        for handle in hooks:
            handle.remove()
    return {
        "input_shape": [-1, *example.shape[1:]],
        "layers": rows,
        "total_parameters": sum(p.numel() for p in network.parameters()),
        "trainable_parameters": sum(p.numel() for p in network.parameters() if p.requires_grad),
    }
