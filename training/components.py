"""Train an electronic-component classifier by transfer learning: `python -m training.components [--promote]`.

Default recipe: EfficientNet-Lite0 (ImageNet weights from its pip package), frozen; features of
each training photo and of `--views` augmented views (random resized crop, flips, rotation, colour
jitter) cached once; a new linear head trained on them with AdamW, label smoothing and early
stopping on the validation loss. `--recipe report` is the student report's recipe (frozen
backbone, new last layer, Adam lr 1e-3, cross-entropy, 30 epochs, no augmentation).
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
from training.imagenet_sources import WeightsUnavailableError, pretrained
from training.metrics import classification_report, confusion_matrix, format_report
from training.plots import plot_confusion_matrix, plot_learning_curves
from training.runtime import seed_everything

log = logging.getLogger("training.components")
TASK = "components"
RECIPES = {
    # name: (augmented views, optimizer, lr, weight decay, label smoothing, epochs, early-stopping patience)
    "cached-head": (10, "adamw", 3e-3, 1e-3, 0.1, 300, 40),
    "report": (0, "adam", 1e-3, 0.0, 0.0, 30, 0),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.components", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="DIR/{train,validation}/<class>/*.jpg")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help="efficientnet_lite0|1|2 (offline) or a torchvision classifier (alexnet as in the report)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="cached-head")
    p.add_argument("--views", type=int, default=None, help="augmented views per training photo (recipe default)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
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


def train_head(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
               num_classes: int, args: argparse.Namespace, generator: torch.Generator) -> tuple[nn.Linear, list[dict]]:
    """A linear head on cached features (views x N x D for training); best validation-loss weights kept."""
    _, optimizer_name, _, decay, smoothing, _, patience = RECIPES[args.recipe]
    lr, epochs = args.lr, args.epochs
    head = nn.Linear(train_x.shape[-1], num_classes)
    optimizer = (torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=decay) if optimizer_name == "adamw"
                 else torch.optim.Adam(head.parameters(), lr=lr))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
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
        history.append({"epoch": epoch, "train_loss": round(total / len(xs), 6), "train_accuracy": round(correct / len(xs), 6),
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
    recipe = RECIPES[args.recipe]
    args.views = recipe[0] if args.views is None else args.views
    args.epochs = recipe[5] if args.epochs is None else args.epochs
    args.lr = recipe[2] if args.lr is None else args.lr
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
    extractor = feature_extractor(source.network, head_name)
    preset = source.preprocessing
    train_x = extract(extractor, train.paths, preset, views=args.views, transform=augmentation(preset),
                      progress=args.progress, desc="train")
    val_x = extract(extractor, validation.paths, preset, progress=args.progress, desc="validation")[0]
    train_y, val_y = torch.tensor(train.targets), torch.tensor(validation.targets)
    extract_seconds = time.perf_counter() - started
    head, history = train_head(train_x, train_y, val_x, val_y, len(labels), args, generator)
    with torch.no_grad():
        probabilities = torch.softmax(head(val_x), 1)
    matrix = confusion_matrix(val_y, probabilities.argmax(1), len(labels))
    report = classification_report(matrix, labels)
    errors = topk_errors(probabilities, val_y)
    missed = misclassified(validation.paths, probabilities, val_y, labels, args.data_dir)
    threshold = unknown_threshold(probabilities, val_y, args.unknown_quantile)
    print(format_report(report))
    print(f"validation top-1 error {errors['top1_error']:.1%}, top-3 error {errors['top3_error']:.1%}; "
          f"unknown below confidence {threshold}")
    for row in missed:
        print(f"  missed {row['photo']}: {row['top3']}")
    network, architecture = assemble(source, head_name, head, len(labels))
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
                        "validation_accuracy": report["accuracy"], "report": report,
                        "confusion_matrix": matrix.tolist(), "misclassified": missed,
                        "unknown_threshold": threshold, "unknown_quantile": args.unknown_quantile},
            "training": {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                         "recipe": args.recipe, "seed": args.seed, "epochs_run": len(history),
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
