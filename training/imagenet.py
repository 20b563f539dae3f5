"""ImageNet model zoo: `python -m training.imagenet {add,evaluate,list}`.

    add --arch efficientnet_lite0 [--promote]   register a pretrained ImageNet-1k classifier (task imagenet)
    evaluate --images DIR [--version V ...]     top-1/top-5 error (report and strict rules) + latency
    list                                        the architectures `add` takes

EfficientNet-Lite0/1/2 work offline (weights from pip packages, referenced by sha256); every
torchvision classifier works when its weights file is in the torch cache or downloadable.
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

from models.networks import count_parameters
from models.optimize import inference_module
from models.registry import DEFAULT_ALIAS, DEFAULT_ROOT, LoadedModel, ModelRegistry, RegistryError, load_model
from models.registry.manifest import git_commit, sha256_file
from training.imagenet_eval import (collect_photos, classify_photos, error_rates, format_misses, format_table,
                                    unknown_labels)
from training.imagenet_sources import OFFLINE_ENV, Pretrained, WeightsUnavailableError, available_archs, pretrained

log = logging.getLogger("training.imagenet")
TASK = "imagenet"
REPO = Path(__file__).resolve().parents[1]
LABELS_FILE = REPO / "models" / "labels" / "imagenet_classes.txt"
SAMPLES_DIR = REPO.parent / "shared" / "data" / "imagenet-samples"


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class lines in index order ("tench, Tinca tinca", ...), shipped with the project."""
    labels = [line.strip() for line in LABELS_FILE.read_text().splitlines() if line.strip()]
    if len(labels) != 1000:
        raise RuntimeError(f"{LABELS_FILE} has {len(labels)} labels, expected 1000")
    return labels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.imagenet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT, help="registry root (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="register a pretrained ImageNet classifier")
    add.add_argument("--arch", required=True, help="efficientnet_lite0|1|2 or any torchvision classifier (see `list`)")
    add.add_argument("--version", default=None, help="version id (default: <UTC time>-<arch>)")
    add.add_argument("--promote", action="store_true", help="make it production")
    add.add_argument("--offline", action="store_true", help=f"never download torchvision weights (also {OFFLINE_ENV}=1)")
    add.add_argument("--no-fold-batchnorm", dest="fold_batchnorm", action="store_false",
                     help="serve without folding batch norm into the convolutions")
    add.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                     help="serve in the default NCHW memory format")
    add.add_argument("--samples", type=Path, default=SAMPLES_DIR,
                     help="labelled photos scored into the manifest when the folder exists (default: %(default)s)")
    add.add_argument("--no-samples", dest="samples", action="store_const", const=None, help="skip that scoring")
    ev = sub.add_parser("evaluate", help="top-1/top-5 error of registered versions on labelled photos")
    ev.add_argument("--images", type=Path, default=SAMPLES_DIR, help="DIR/<label>.jpg or DIR/<label>/*.jpg")
    ev.add_argument("--version", nargs="+", default=[DEFAULT_ALIAS], help="versions or aliases (default: production)")
    ev.add_argument("--all", action="store_true", help="every registered imagenet version")
    ev.add_argument("--threads", type=int, default=1, help="torch CPU threads (the service's default is 1)")
    ev.add_argument("--json", type=Path, default=None, help="also write the results here")
    sub.add_parser("list", help="architectures `add` accepts")
    return p


def build_manifest(source: Pretrained, args: argparse.Namespace, samples: dict[str, Any] | None,
                   commit: str | None) -> dict[str, Any]:
    """The descriptive manifest fields of a pretrained ImageNet classifier (registry fills in the rest)."""
    metrics: dict[str, Any] = {
        "published_top1_accuracy": source.published.get("top1_accuracy"),
        "published_top5_accuracy": source.published.get("top5_accuracy"),
        "published_source": source.published.get("source"),
    }
    if samples:
        metrics["samples"] = samples
        metrics.update({f"samples_{k}": v for k, v in samples.items() if k.startswith("top")})
    return {
        "architecture": source.architecture,
        "labels": imagenet_labels(),
        "preprocessing": source.preprocessing,
        "inference": {"fold_batchnorm": args.fold_batchnorm, "channels_last": args.channels_last},
        "metrics": metrics,
        "training": {"config": {k: _portable(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "note": "pretrained on ImageNet-1k by its publisher; registered as published, not trained here",
                     "torch": torch.__version__},
        "lineage": {"source": source.source, "code_commit": commit, "labels_sha256": sha256_file(LABELS_FILE)},
    }


def score_samples(source: Pretrained, args: argparse.Namespace) -> dict[str, Any] | None:
    """Errors on the sample photos (recorded as headline metrics), or None when the folder is absent."""
    if not args.samples or not args.samples.is_dir():
        return None
    options = {"fold_batchnorm": args.fold_batchnorm, "channels_last": args.channels_last}
    model = LoadedModel(task=TASK, version="unregistered", manifest={"preprocessing": source.preprocessing},
                        network=source.network, device=torch.device("cpu"), labels=imagenet_labels(),
                        runner=inference_module(source.network, options))
    summary = error_rates(classify_photos(model, collect_photos(args.samples)), model.labels)
    # Latency depends on the machine and its load: bench.imagenet measures it; the manifest keeps errors only.
    return {**{k: v for k, v in summary.items() if not k.startswith("ms_")}, "images": _portable(args.samples)}


def _portable(path: Path) -> str:
    """`path` relative to the repository's parent when inside it (so manifests do not record a home folder)."""
    try:
        return str(path.resolve().relative_to(REPO.parent))
    except ValueError:
        return str(path)


def add(args: argparse.Namespace) -> str:
    """Register `args.arch` as a new imagenet version; return its id."""
    commit = git_commit(Path(__file__).resolve().parent)
    source = pretrained(args.arch, allow_download=False if args.offline else None)
    registry = ModelRegistry(args.store)
    manifest = build_manifest(source, args, score_samples(source, args), commit)
    version = args.version or f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{args.arch}"
    version = registry.register(TASK, source.network, manifest, version=version, base_weights=source.base_weights)
    print(f"registered {TASK}/{version}: {args.arch}, {count_parameters(source.network):,} parameters, "
          f"input {source.preprocessing['size'][0]} px, weights sha256 {source.source['sha256'][:16]}...")
    if args.promote:
        registry.promote(TASK, version)
        print(f"{TASK}: {DEFAULT_ALIAS} -> {version}")
    return version


def evaluate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Score each requested version on `args.images`; print the table, the misses and the latency."""
    torch.set_num_threads(args.threads)
    registry = ModelRegistry(args.store)
    photos = collect_photos(args.images)
    refs = registry.versions(TASK) if args.all else args.version
    rows, report = [], []
    for ref in refs:
        model = load_model(registry, TASK, ref, torch.device("cpu"))
        unknown = unknown_labels(photos, model.labels)
        if unknown:
            print(f"warning: no ImageNet class starts with {', '.join(unknown)} (misnamed photos?)", file=sys.stderr)
        results = classify_photos(model, photos)
        summary = error_rates(results, model.labels)
        arch = model.manifest["architecture"]
        arch_name = arch["args"].get("model") or arch["args"].get("variant") or arch["name"]
        rows.append((model.version, str(arch_name), summary))
        print(f"\n{model.version}: misses under the report rule (top-5 shown)\n{format_misses(results, model.labels)}")
        report.append({"version": model.version, "architecture": arch_name, "parameters": model.manifest["parameters"],
                       **summary})
    print(f"\n{len(photos)} photos in {args.images}\n{format_table(rows)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        if args.command == "list":
            print("\n".join(available_archs()))
        elif args.command == "add":
            add(args)
        else:
            evaluate(args)
    except (WeightsUnavailableError, RegistryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.debug("done in %.1f s", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
