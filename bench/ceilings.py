"""In-process ceilings: how fast decoding and the forward pass alone go, to read HTTP numbers against."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from bench.http import Payload
from models.preprocessing import image_to_array, to_tensor
from models.registry import ModelRegistry
from models.runtime import load_model


def rate(fn: Callable[[], Any], items_per_call: int, seconds: float = 1.5) -> float:
    """Items per second of `fn` over about `seconds` (after one warm-up call)."""
    fn()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return calls * items_per_call / (time.perf_counter() - started)


def measure(digit_payloads: list[Payload], imagenet: Payload | None) -> dict[str, float]:
    """Decode+preprocess per image for each payload, and forward passes at batch 1/32/256 with each backend
    (torch, onnxruntime), one thread."""
    torch.set_num_threads(1)
    results: dict[str, float] = {}
    registry = ModelRegistry()
    tasks = [("digits", digit_payloads)] + ([("imagenet", [imagenet])] if imagenet else [])
    for task, payloads in tasks:
        model = load_model(registry, task, "production", torch.device("cpu"))
        onnx = load_model(registry, task, "production", torch.device("cpu"), backend="onnxruntime")
        preset = model.preprocessing
        for payload in payloads:
            data = payload.path.read_bytes()
            results[f"decode+preprocess {payload.name}"] = rate(
                lambda: image_to_array(data, preset, max_pixels=40_000_000), 1)
        array = image_to_array(payloads[0].path.read_bytes(), preset, max_pixels=40_000_000)
        for batch in (1, 32, 256) if task == "digits" else (1, 8, 32):
            x = to_tensor([array] * batch, preset)
            for loaded in (model, onnx):
                results[f"{task} forward ({loaded.backend}), batch {batch}"] = rate(lambda: loaded.predict_proba(x), batch)
    return results
