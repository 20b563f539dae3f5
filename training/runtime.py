"""Device choice and seeding: the one place each is decided."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else CPU; asking for `cuda` without one fails early."""
    if name not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
