"""Seeding and the start of a run: the one place a training run's randomness is decided.

The device is chosen by `models.devices.select_device`, shared with the service.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.registry.manifest import git_commit


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


@dataclass(frozen=True)
class RunStart:
    """When a run began (`time.perf_counter`), the code's commit then, and its seeded generator."""

    started: float
    commit: str | None
    generator: torch.Generator

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def start_run(seed: int, threads: int = 0) -> RunStart:
    """Note the start time and the commit of the code (as it was when the run began), set torch's CPU threads
    (0 keeps torch's default) and seed everything (`seed_everything`)."""
    started = time.perf_counter()
    commit = git_commit(Path(__file__).resolve().parent)
    if threads:
        torch.set_num_threads(threads)
    return RunStart(started, commit, seed_everything(seed))
