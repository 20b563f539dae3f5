"""Train an electronic-component classifier by transfer learning: `python -m training.components [--promote]`.

Default recipe `finetune` (linear probe, then fine-tune): EfficientNet-Lite0 (ImageNet weights from its
pip package); (1) features of each training photo and of `--views` augmented views (random resized crop,
flips, rotation, colour jitter) are cached once and a new linear head is trained on them with AdamW,
label smoothing and early stopping on the validation loss; (2) starting from that head, the head and the
last `--unfreeze` blocks are fine-tuned on freshly augmented photos every epoch (AdamW, cosine schedule,
label smoothing, early stopping). `--recipe cached-head` stops after (1). `--recipe report` is the student
report's recipe (frozen backbone, new last layer, Adam lr 1e-3, cross-entropy, 30 epochs, no augmentation).
`--eval-dir DIR --version V` scores a registered version on any labelled folder instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from models.networks import build_network
from models.registry import DEFAULT_ALIAS, DEFAULT_ROOT, ModelRegistry, RegistryError, load_model
from models.registry.manifest import git_commit
from training.components_data import (DEFAULT_DATA_DIR, Split, augmentation, class_names, extract, feature_extractor,
                                      file_hashes, last_linear, load_split)
from training.components_finetune import fine_tune, tail_parameters, load_working_copies, serving_tensor
from training.engine import OPTIMIZERS, build_optimizer
from training.imagenet_sources import WeightsUnavailableError, pretrained
from training.metrics import classification_report, confusion_matrix, format_report
from training.plots import plot_confusion_matrix, plot_learning_curves
from training.runtime import seed_everything

log = logging.getLogger("training.components")
TASK = "components"
# Defaults of every knob left unset on the command line. Stage 1 trains the head on cached features
# (views, optimizer, lr, weight_decay, label_smoothing, epochs, patience); stage 2 (unfreeze > 0)
# fine-tunes the head and the last `unfreeze` blocks on fresh augmentation.
_HEAD = dict(views=10, optimizer="adamw", lr=3e-3, weight_decay=1e-3, label_smoothing=0.1, epochs=300, patience=40)
_NO_FINETUNE = dict(unfreeze=0, finetune_epochs=0, finetune_lr=0.0, finetune_weight_decay=0.0, finetune_patience=0)
RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {**_HEAD, "unfreeze": 2, "finetune_epochs": 30, "finetune_lr": 3e-4, "finetune_weight_decay": 1e-2,
                 "finetune_patience": 8},
    "cached-head": {**_HEAD, **_NO_FINETUNE},
    "report": dict(views=0, optimizer="adam", lr=1e-3, weight_decay=0.0, label_smoothing=0.0, epochs=30, patience=0,
                   **_NO_FINETUNE),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.components", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="DIR/{train,validation}/<class>/*.jpg")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help="efficientnet_lite0|1|2 (offline) or a torchvision classifier (alexnet as in the report)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="finetune")
    p.add_argument("--views", type=int, default=None, help="augmented views per training photo (recipe default)")
    p.add_argument("--epochs", type=int, default=None, help="head epochs on cached features")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="head optimizer")
    p.add_argument("--lr", type=float, default=None, help="head learning rate")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="head early stopping (0: off)")
    p.add_argument("--unfreeze", type=int, default=None,
                   help="fine-tune the head and this many blocks before it on fresh augmentation (0: no stage 2)")
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--finetune-lr", type=float, default=None)
    p.add_argument("--finetune-weight-decay", type=float, default=None)
    p.add_argument("--finetune-patience", type=int, default=None, help="fine-tuning early stopping (0: off)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--unknown-quantile", type=float, default=0.05,
                   help="threshold = this quantile of the confidence of correctly classified validation photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    p.add_argument("--limit", type=int, default=0, help="at most N photos per class and split (smoke tests)")
    p.add_argument("--out-dir", type=Path, default=None, help="run folder (default runs/components/<time>)")
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--promote", action="store_true")
    p.add_argument("--no-register", dest="register", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--eval-dir", type=Path, default=None, help="evaluate --version on DIR/<class>/*.jpg and exit")
    p.add_argument("--version", default=DEFAULT_ALIAS, help="version or alias for --eval-dir")
    return p


def resolve_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every knob left unset from the recipe; fail early on values that cannot work."""
    for key, value in RECIPES[args.recipe].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.views < 0 or args.epochs < 1 or args.unfreeze < 0 or args.batch_size < 1:
        raise ValueError("--views and --unfreeze must be >= 0, --epochs and --batch-size >= 1")
    if args.unfreeze and args.finetune_epochs < 1:
        raise ValueError("--unfreeze needs --finetune-epochs >= 1")
    return args


def train_head(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
               num_classes: int, args: argparse.Namespace, generator: torch.Generator) -> tuple[nn.Linear, list[dict]]:
    """A linear head on cached features (views x N x D for training); best validation-loss weights kept."""
    lr, epochs, patience = args.lr, args.epochs, args.patience
    head = nn.Linear(train_x.shape[-1], num_classes)
    optimizer = build_optimizer(args.optimizer, head.parameters(), lr=lr, weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    xs, ys = train_x.reshape(-1, train_x.shape[-1]), train_y.repeat(train_x.shape[0])
    history, best, best_loss, bad = [], None, float("inf"), 0
    for epoch in tqdm(range(1, epochs + 1), desc="head", disable=not args.progress, leave=False):
        head.train()
        order = torch.randperm(len(xs), generator=generator)
        total, correct = 0.0, 0
        for start in range(0, len(xs), args.batch_size):
            index = order[start : start + args.batch_size]
            logits = head(xs[index])
            loss = loss_fn(logits, ys[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            correct += int((logits.argmax(1) == ys[index]).sum())
        head.eval()
        with torch.no_grad():
            val_logits = head(val_x)
            val_loss = float(nn.functional.cross_entropy(val_logits, val_y))
        history.append({"stage": "head", "epoch": epoch, "train_loss": round(total / len(xs), 6), "train_accuracy": round(correct / len(xs), 6),
                        "dev_loss": round(val_loss, 6), "dev_accuracy": round(float((val_logits.argmax(1) == val_y).float().mean()), 6)})
        if val_loss < best_loss - 1e-4:
            best_loss, bad, best = val_loss, 0, {k: v.clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
        if patience and bad >= patience:
            break
    if patience and best is not None:
        head.load_state_dict(best)
    return head.eval(), history


def topk_errors(probabilities: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    top3 = probabilities.topk(min(3, probabilities.shape[1]), dim=1).indices
    return {"top1_error": round(float((top3[:, 0] != targets).float().mean()), 4),
            "top3_error": round(float(1 - (top3 == targets[:, None]).any(1).float().mean()), 4)}


def misclassified(paths: list[Path], probabilities: torch.Tensor, targets: torch.Tensor, labels: list[str],
                  root: Path) -> list[dict[str, Any]]:
    values, indices = probabilities.topk(min(3, probabilities.shape[1]), dim=1)
    return [{"photo": str(p.relative_to(root)) if p.is_relative_to(root) else str(p), "label": labels[int(t)],
             "top3": [[labels[i], round(v, 4)] for v, i in zip(vals.tolist(), idx.tolist())]}
            for p, t, vals, idx in zip(paths, targets, values, indices) if int(idx[0]) != int(t)]


def unknown_threshold(probabilities: torch.Tensor, targets: torch.Tensor, quantile: float) -> float:
    """Confidence below which a prediction is flagged unknown: a low quantile of the confidences of the
    correctly classified validation photos (so about `quantile` of good predictions get flagged)."""
    confidence, predicted = probabilities.max(1)
    good = confidence[predicted == targets]
    return round(float(torch.quantile(good, quantile)) if len(good) else 0.5, 4)


def assemble(source: Any, head_name: str, head: nn.Linear, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The full classifier: the pretrained backbone with `head` in place of its ImageNet head."""
    architecture = json.loads(json.dumps(source.architecture))
    if architecture["name"] == "torchvision":
        architecture["args"]["kwargs"] = {**architecture["args"].get("kwargs", {}), "num_classes": num_classes}
    else:
        architecture["args"]["num_classes"] = num_classes
    network = build_network(architecture["name"], **architecture["args"])
    state = {k: v for k, v in source.network.state_dict().items() if not k.startswith(f"{head_name}.")}
    state.update({f"{head_name}.{k}": v for k, v in head.state_dict().items()})
    network.load_state_dict(state, strict=True)
    return network.eval(), architecture


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Extract features, train the head, evaluate on validation, write artifacts, register."""
    started = time.perf_counter()
    commit = git_commit(Path(__file__).resolve().parent)
    resolve_recipe(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = seed_everything(args.seed)
    labels = class_names(args.data_dir)
    train = load_split(args.data_dir, "train", labels, args.limit)
    validation = load_split(args.data_dir, "validation", labels, args.limit)
    if not train.paths or not validation.paths:
        raise FileNotFoundError(f"{args.data_dir} needs photos in train/<class>/ and validation/<class>/")
    source = pretrained(args.backbone)
    head_name, _ = last_linear(source.network)
    tail_parameters(source.network, head_name, args.unfreeze)  # a bad --unfreeze fails before any work
    extractor = feature_extractor(source.network, head_name)
    preset = source.preprocessing
    train_x = extract(extractor, train.paths, preset, views=args.views, transform=augmentation(preset),
                      progress=args.progress, desc="train")
    val_x = extract(extractor, validation.paths, preset, progress=args.progress, desc="validation")[0]
    train_y, val_y = torch.tensor(train.targets), torch.tensor(validation.targets)
    extract_seconds = time.perf_counter() - started
    head, history = train_head(train_x, train_y, val_x, val_y, len(labels), args, generator)
    network, architecture = assemble(source, head_name, head, len(labels))
    val_images = serving_tensor(validation.paths, preset)
    finetuned: list[str] = []
    if args.unfreeze:
        result, finetuned = fine_tune(network, head_name, train_images=load_working_copies(train.paths, preset),
                                      train_targets=train.targets, val_x=val_images, val_y=val_y, preset=preset,
                                      transform=augmentation(preset), args=args, generator=generator)
        history += [{**row, "stage": "finetune", "epoch": len(history) + row["epoch"]} for row in result.history]
    with torch.inference_mode():
        probabilities = torch.softmax(network.eval()(val_images), 1)
    matrix = confusion_matrix(val_y, probabilities.argmax(1), len(labels))
    report = classification_report(matrix, labels)
    errors = {**topk_errors(probabilities, val_y),
              "loss": round(float(nn.functional.nll_loss(probabilities.clamp_min(1e-12).log(), val_y)), 4)}
    missed = misclassified(validation.paths, probabilities, val_y, labels, args.data_dir)
    threshold = unknown_threshold(probabilities, val_y, args.unknown_quantile)
    print(format_report(report))
    print(f"validation top-1 error {errors['top1_error']:.1%}, top-3 error {errors['top3_error']:.1%}; "
          f"unknown below confidence {threshold}")
    for row in missed:
        print(f"  missed {row['photo']}: {row['top3']}")
    wall = time.perf_counter() - started
    out_dir = args.out_dir or Path("runs") / "components" / time.strftime("%Y%m%d-%H%M%S")
    artifacts = write_artifacts(out_dir, history, matrix, labels, args)
    summary = {**errors, "validation_photos": len(validation.paths), "epochs_run": len(history),
               "extract_seconds": round(extract_seconds, 1), "wall_seconds": round(wall, 1), "version": None,
               "unknown_threshold": threshold}
    if args.register:
        manifest = {
            "architecture": architecture, "labels": labels, "preprocessing": preset,
            "inference": {"fold_batchnorm": True, "channels_last": True},
            "unknown_threshold": threshold,
            "metrics": {"validation_top1_error": errors["top1_error"], "validation_top3_error": errors["top3_error"],
                        "validation_loss": errors["loss"],
                        "validation_accuracy": report["accuracy"], "report": report,
                        "confusion_matrix": matrix.tolist(), "misclassified": missed,
                        "unknown_threshold": threshold, "unknown_quantile": args.unknown_quantile},
            "training": {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                         "recipe": args.recipe, "seed": args.seed, "epochs_run": len(history),
                         "finetuned_parameters": finetuned,
                         "wall_seconds": round(wall, 1), "device": "cpu", "torch": torch.__version__,
                         "threads": torch.get_num_threads()},
            "lineage": {"dataset": "components", "files": file_hashes(train, validation, root=args.data_dir),
                        "backbone": {"name": args.backbone, **source.source}, "code_commit": commit},
        }
        registry = ModelRegistry(args.store)
        version = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{args.backbone}-s{args.seed}"
        summary["version"] = registry.register(TASK, network, manifest, artifacts=artifacts, version=version,
                                               base_weights=source.base_weights)
        if args.promote:
            registry.promote(TASK, summary["version"])
    print(json.dumps(summary))
    return summary


def write_artifacts(out_dir: Path, history: list[dict[str, Any]], matrix: torch.Tensor, labels: list[str],
                    args: argparse.Namespace) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    curves = plot_learning_curves(history, out_dir / "learning_curves.png",
                                  title=f"{args.backbone} {args.recipe} seed {args.seed} (dev = validation)")
    confusion = plot_confusion_matrix(matrix, labels, out_dir / "confusion_matrix.png", title="validation")
    return {"learning_curves.png": curves, "confusion_matrix.png": confusion, "history.json": out_dir / "history.json"}


def evaluate_dir(args: argparse.Namespace) -> dict[str, Any]:
    """Top-1/top-3 error of a registered version on DIR/<class>/*.jpg (classes = the model's labels)."""
    model = load_model(ModelRegistry(args.store), TASK, args.version, torch.device("cpu"))
    split = load_split(args.eval_dir, ".", model.labels)
    if not split.paths:
        raise FileNotFoundError(f"no photos in {args.eval_dir}/<class>/ for classes {', '.join(model.labels)}")
    from models.preprocessing import image_to_array, to_tensor

    rows = [model.predict_proba(to_tensor([image_to_array(p.read_bytes(), model.preprocessing, max_pixels=100_000_000)],
                                          model.preprocessing))[0] for p in split.paths]
    probabilities, targets = torch.stack(rows), torch.tensor(split.targets)
    errors = topk_errors(probabilities, targets)
    threshold = model.manifest.get("unknown_threshold", 0.0)
    result = {"version": model.version, "photos": len(split.paths), **errors,
              "flagged_unknown": int((probabilities.max(1).values < threshold).sum()),
              "misclassified": misclassified(split.paths, probabilities, targets, model.labels, args.eval_dir)}
    print(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        evaluate_dir(args) if args.eval_dir else run(args)
    except (WeightsUnavailableError, RegistryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
