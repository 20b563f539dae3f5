"""Choosing the torch device: the one helper trainers and the service share."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else CPU; `cuda` without a CUDA device fails early."""
    if name not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available (torch.cuda.is_available() is False)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
