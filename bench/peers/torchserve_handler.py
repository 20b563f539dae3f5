"""BASELINE, NOT PART OF THE SERVICE: the digits model as a TorchServe custom handler.

What TorchServe's custom-handler docs show: `initialize` loads the model once per worker, `handle` takes a
list of requests (one, or a batch when the model is registered with a batch size), decodes each upload
(the multipart field `file`), runs one forward pass and returns one JSON answer per request. It reads the
weights and preprocessing from the registry's production version (PyTorch, as the tutorial app does), so
every server in `bench.serving` serves identical models. The repository must be on PYTHONPATH.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.registry import ModelRegistry
from models.runtime import load_model


class DigitsHandler:
    def initialize(self, context: Any) -> None:
        torch.set_num_threads(int(os.environ.get("MODELHOUSE_TORCH_THREADS", "1")))
        self.model = load_model(ModelRegistry(), os.environ.get("MODELHOUSE_BASELINE_TASK", "digits"), "production",
                                torch.device("cpu"))
        preset = self.model.preprocessing
        self.mean = torch.tensor(preset["mean"]).view(-1, 1, 1)
        self.std = torch.tensor(preset["std"]).view(-1, 1, 1)
        self.size = tuple(preset["size"])

    def tensor(self, data: bytes) -> torch.Tensor:
        image = Image.open(io.BytesIO(data)).convert("L").resize((self.size[1], self.size[0]))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
        return (x - self.mean) / self.std

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        batch = torch.stack([self.tensor(bytes(row.get("file") or row.get("data") or row.get("body"))) for row in data])
        with torch.no_grad():
            probabilities = torch.softmax(self.model.network(batch), dim=1)
        answers = []
        for row in probabilities:
            values, indices = row.topk(3)
            top = [{"label": self.model.labels[i], "probability": float(p)} for p, i in zip(values, indices)]
            answers.append(json.dumps({"predictions": [{"label": top[0]["label"], "top": top}]}))
        return answers


_service = DigitsHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    """TorchServe's module-level entry point: the first call (data None) initialises."""
    if not hasattr(_service, "model"):
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
