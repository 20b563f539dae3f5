"""ONNX Runtime as an inference backend for a loaded network (CPU).

The network is exported to ONNX in memory, from the weights the registry just verified, every
time a version is loaded: nothing new is stored, and the registry's safetensors stay the only source
of truth. On this 2-core CPU ONNX Runtime runs LeNet-5 5-8x faster at batch 1 than eager PyTorch (no
per-module Python dispatch) and EfficientNet-Lite0 about 1.4x faster, and it releases the GIL for the
whole forward pass (the ceilings of `python -m bench.serving` measure both backends).

Every export is checked before it is used: the ONNX and PyTorch outputs on the example batch must
agree (`MAX_ABS_DIFF`), so a network the tracer cannot capture faithfully is refused, not served wrong.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)
BACKENDS = ("torch", "onnxruntime")
MAX_ABS_DIFF = 1e-4  # on logits; float32 kernels differ in summation order, never by more on these nets
# torch.onnx.export keeps process-wide state (GLOBALS.in_onnx_export): two exports at once (two versions
# loading in two threads) make the second fail, so exports take turns.
_EXPORT_LOCK = threading.Lock()
# The tracer warns that the networks' shape arithmetic (TF "same" padding) becomes constants: intended,
# since a preset fixes the input size. A filter set once, not catch_warnings(), which is not thread-safe.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"models\.networks\.")


class BackendError(ValueError):
    """A backend cannot run this network here (not installed, wrong device, or a faithless export)."""


class OnnxRunner:
    """Callable like the network: an NCHW float tensor in, logits (a CPU tensor) out."""

    def __init__(self, session: object, input_name: str) -> None:
        self.session, self.input_name = session, input_name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().cpu().numpy()
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})
        return torch.from_numpy(outputs[0])


def export_onnx(network: nn.Module, example: torch.Tensor) -> bytes:
    """The network (eval mode) as ONNX bytes with a dynamic batch dimension.

    The TorchScript-based exporter (`dynamo=False`) is used: it is fast and needs only the `onnx`
    package. Shape arithmetic in Python (e.g. TF-style "same" padding) is recorded as constants for
    the example's height and width, which is right because a preset fixes the input size.
    """
    buffer = io.BytesIO()
    with _EXPORT_LOCK, torch.no_grad():
        torch.onnx.export(network.eval(), (example,), buffer, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buffer.getvalue()


def onnx_runner(network: nn.Module, example: torch.Tensor, *, threads: int = 1) -> OnnxRunner:
    """An ONNX Runtime session for `network`, checked against it on `example` (batch of 2 random inputs)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError("the onnxruntime backend needs the packages onnxruntime and onnx: "
                           "pip install onnxruntime onnx") from exc
    try:
        model_bytes = export_onnx(network, example)
    except Exception as exc:  # any exporter failure means: serve with torch instead
        raise BackendError(f"{type(network).__name__} could not be exported to ONNX: {exc}") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    runner = OnnxRunner(session, session.get_inputs()[0].name)
    check = torch.rand((2, *example.shape[1:]), generator=torch.Generator().manual_seed(0)) * 4 - 2
    with torch.inference_mode():
        expected = network(check).float()
    difference = float((runner(check) - expected).abs().max())
    if not difference <= MAX_ABS_DIFF:
        raise BackendError(f"ONNX export of {type(network).__name__} differs from PyTorch by {difference:.2e} "
                           f"(limit {MAX_ABS_DIFF:g})")
    return runner


def build_runner(backend: str, network: nn.Module, example: torch.Tensor, device: torch.device,
                 threads: int = 1) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What runs requests for `backend` (None: the PyTorch module itself). Raises `BackendError`."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        return None
    if device.type != "cpu":
        raise BackendError(f"the onnxruntime backend runs on the CPU; this service runs on {device} "
                           "(use the torch backend there)")
    return onnx_runner(network, example, threads=threads)
