"""The training engine: `train_one_epoch`, `evaluate`, `fit` with early stopping and checkpoints.

Batches come from callables so each trainer decides how data is read and augmented
(`tensor_batches` serves tensors already in memory); the loop itself reads top to bottom.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
BatchFactory = Callable[[], Iterable[Batch]]
SCHEDULERS = ("plateau", "onecycle", "cosine", "none")
OPTIMIZERS = ("adam", "adamw", "sgd")


def batch_count(items: int, batch_size: int) -> int:
    """Batches of at most `batch_size` that `items` items make (the last one may be short)."""
    return -(-items // batch_size)


def tensor_batches(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, *,
                   generator: torch.Generator | None = None) -> Iterator[Batch]:
    """(inputs, targets) in slices of `batch_size`: in order, or in a fresh `torch.randperm` order drawn
    from `generator` on each call when one is given."""
    if generator is None:
        for start in range(0, len(targets), batch_size):
            yield inputs[start : start + batch_size], targets[start : start + batch_size]
        return
    order = torch.randperm(len(targets), generator=generator)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield inputs[index], targets[index]


def build_optimizer(name: str, params: Iterable[nn.Parameter], *, lr: float, weight_decay: float,
                    momentum: float = 0.9, nesterov: bool = True) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


@dataclass
class Schedule:
    """An LR scheduler plus when it steps: after each batch, or after each epoch (with the dev loss)."""

    scheduler: Any | None
    per_batch: bool

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def after_epoch(self, dev_loss: float) -> None:
        if self.scheduler is None or self.per_batch:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(dev_loss)
        else:
            self.scheduler.step()


def build_schedule(name: str, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int,
                   max_lr: float, patience: int = 5, factor: float = 0.1) -> Schedule:
    if name == "plateau":
        return Schedule(torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=patience, factor=factor), per_batch=False)
    if name == "onecycle":
        return Schedule(torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=0.2), per_batch=True)
    if name == "cosine":
        return Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch), per_batch=True)
    if name == "none":
        return Schedule(None, per_batch=False)
    raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")


@dataclass
class EarlyStopping:
    """Stop when the dev loss has not improved by `min_delta` for `patience` epochs (0: never stop early).

    The best weights are kept; `fit` ends with them unless `restore_best` is False (then with the last epoch's).
    """

    patience: int
    min_delta: float = 0.0
    restore_best: bool = True
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0

    def update(self, epoch: int, dev_loss: float, model: nn.Module) -> bool:
        """Record this epoch; return True when training should stop."""
        if dev_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = dev_loss, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience


def train_one_epoch(model: nn.Module, batches: Iterable[Batch], *, optimizer: torch.optim.Optimizer,
                    schedule: Schedule, loss_fn: nn.Module, device: torch.device, total: int | None = None,
                    description: str = "train", progress: bool = True,
                    autocast: torch.dtype | None = None) -> tuple[float, float]:
    """One pass over `batches`; returns (mean loss, accuracy). With `autocast` (torch.bfloat16), the forward
    pass runs in that precision where autocast allows (weights, gradients and the loss stay float32)."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(batches, total=total, desc=description, leave=False, disable=not progress, file=sys.stderr)
    for inputs, targets in bar:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            logits = model(inputs)
        logits = logits.float()
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.after_batch()
        loss_sum += loss.item() * len(targets)
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(targets)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
    return loss_sum / max(seen, 1), correct / max(seen, 1)


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[Batch], *, device: torch.device,
             loss_fn: nn.Module | None = None) -> dict[str, Any]:
    """Mean loss, accuracy, and the per-sample logits and targets (on CPU) over `batches`."""
    model.eval()
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    all_logits, all_targets, loss_sum = [], [], 0.0
    for inputs, targets in batches:
        logits = model(inputs.to(device)).float().cpu()
        loss_sum += float(loss_fn(logits, targets)) * len(targets)
        all_logits.append(logits)
        all_targets.append(targets)
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    return {
        "loss": loss_sum / max(len(targets), 1),
        "accuracy": float((logits.argmax(1) == targets).float().mean()) if len(targets) else 0.0,
        "logits": logits,
        "targets": targets,
    }


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def fit(model: nn.Module, *, train_batches: BatchFactory, dev_batches: BatchFactory, steps_per_epoch: int,
        optimizer: torch.optim.Optimizer, schedule: Schedule, epochs: int, device: torch.device,
        early_stopping: EarlyStopping, train_loss: nn.Module, progress: bool = True,
        checkpoint: Path | None = None, resume_from: dict[str, Any] | None = None,
        generator: torch.Generator | None = None, epoch_log_level: int = logging.INFO,
        autocast: torch.dtype | None = None) -> FitResult:
    """Train for up to `epochs`, evaluate on dev after each, stop early, restore the best dev weights
    (see `EarlyStopping`). Each epoch's row is logged at `epoch_log_level`.

    With `checkpoint`, the full state is saved after every epoch; `resume_from` (a loaded
    checkpoint) continues from where it stopped; `generator` (data order, augmentation) is
    saved and restored with it so a resumed run matches an uninterrupted one. `autocast`: see `train_one_epoch`.
    """
    result, start_epoch = FitResult(), 1
    if resume_from is not None:
        start_epoch = _restore(resume_from, model, optimizer, schedule, early_stopping, result, generator)
    started = time.perf_counter() - result.seconds
    for epoch in range(start_epoch, epochs + 1):
        epoch_start = time.perf_counter()
        train_loss_value, train_acc = train_one_epoch(
            model, train_batches(), optimizer=optimizer, schedule=schedule, loss_fn=train_loss, device=device,
            total=steps_per_epoch, description=f"epoch {epoch}/{epochs}", progress=progress, autocast=autocast)
        dev = evaluate(model, dev_batches(), device=device)
        schedule.after_epoch(dev["loss"])
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": round(train_loss_value, 6),
            "train_accuracy": round(train_acc, 6),
            "dev_loss": round(dev["loss"], 6),
            "dev_accuracy": round(dev["accuracy"], 6),
            "seconds": round(time.perf_counter() - epoch_start, 2),
        }
        result.history.append(row)
        log.log(epoch_log_level, "epoch %d: train loss %.4f acc %.4f | dev loss %.4f acc %.4f | %.1fs", epoch,
                row["train_loss"], row["train_accuracy"], row["dev_loss"], row["dev_accuracy"], row["seconds"])
        result.epochs_run = epoch
        stop = early_stopping.update(epoch, dev["loss"], model)
        result.seconds = time.perf_counter() - started
        if checkpoint is not None:
            _save(checkpoint, epoch, model, optimizer, schedule, early_stopping, result, generator)
        if stop:
            log.info("early stop at epoch %d: no dev-loss gain for %d epochs", epoch, early_stopping.patience)
            result.stopped_early = True
            break
    if early_stopping.restore_best and early_stopping.best_state is not None:
        model.load_state_dict(early_stopping.best_state)
    result.best_epoch = early_stopping.best_epoch
    result.seconds = time.perf_counter() - started
    return result


def _save(path: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule,
          stopper: EarlyStopping, result: FitResult, generator: torch.Generator | None) -> None:
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.scheduler.state_dict() if schedule.scheduler is not None else None,
        "early_stopping": {"best_loss": stopper.best_loss, "best_epoch": stopper.best_epoch,
                           "bad_epochs": stopper.bad_epochs, "best_state": stopper.best_state},
        "history": result.history,
        "seconds": result.seconds,
        "rng": torch.get_rng_state(),
        "generator": generator.get_state() if generator is not None else None,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by `fit` (tensors and plain data only: weights_only=True)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule,
             stopper: EarlyStopping, result: FitResult, generator: torch.Generator | None) -> int:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if schedule.scheduler is not None and state["scheduler"] is not None:
        schedule.scheduler.load_state_dict(state["scheduler"])
    saved = state["early_stopping"]
    stopper.best_loss, stopper.best_epoch = saved["best_loss"], saved["best_epoch"]
    stopper.bad_epochs, stopper.best_state = saved["bad_epochs"], saved["best_state"]
    result.history, result.seconds = list(state["history"]), float(state["seconds"])
    torch.set_rng_state(state["rng"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])
    log.info("resumed after epoch %d", state["epoch"])
    return int(state["epoch"]) + 1
