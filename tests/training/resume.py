"""The shared check of `--resume`: a run cut by a crash and resumed registers what an uncut run registers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import training.engine
from models.registry import ModelRegistry

RESUME_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def assert_resume_matches_uninterrupted(main: Callable[[list[str]], int], args: list[str], task: str,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train with `args` uncut (store s1); crash in epoch 3 (run folder `cut`), resume from its checkpoint
    (store s2); both registered weights must agree tensor for tensor, to float rounding.

    Not bit for bit: oneDNN and MKL may round a reduction differently from one run to the next on some CPUs
    (seen once in CI), while a state the checkpoint failed to restore (data order, augmentation draws,
    momentum, schedule) moves the weights by orders of magnitude more than `RESUME_TOLERANCE`."""
    assert main([*args, "--store", str(tmp_path / "s1"), "--out-dir", str(tmp_path / "full")]) == 0
    real_epoch, calls = training.engine.train_one_epoch, {"n": 0}

    def crash_on_third_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_epoch(*a, **k)

    monkeypatch.setattr(training.engine, "train_one_epoch", crash_on_third_epoch)
    assert main([*args, "--no-register", "--out-dir", str(tmp_path / "cut")]) == 2
    monkeypatch.setattr(training.engine, "train_one_epoch", real_epoch)
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    assert main([*args, "--store", str(tmp_path / "s2"), "--out-dir", str(tmp_path / "cut"),
                 "--resume", str(checkpoint)]) == 0

    def weights(store: Path) -> dict[str, torch.Tensor]:
        registry = ModelRegistry(store)
        return load_file(registry.version_dir(task, registry.versions(task)[0]) / "weights.safetensors")

    full, resumed = weights(tmp_path / "s1"), weights(tmp_path / "s2")
    assert full.keys() == resumed.keys()
    off = {k: float((full[k].double() - resumed[k].double()).abs().max()) for k in full
           if not torch.allclose(full[k], resumed[k], **RESUME_TOLERANCE)}
    assert not off, f"resumed weights differ from the uncut run's (max abs difference per tensor): {off}"
