"""ImageNet model zoo: `python -m training.imagenet {add,evaluate,choose,list}`.

    add --arch efficientnet_lite0 [--promote]   register a pretrained ImageNet-1k classifier (task imagenet)
    evaluate --images DIR [--version V ...]     top-1/top-5 error (report and strict rules) + latency
    choose --images DIR [--images DIR ...]      compare the Lite candidates on dev photos, register and
                                                promote the best within the latency budget (training.imagenet_choose)
    list                                        the architectures `add` takes

EfficientNet-Lite0/1/2 work offline (weights from pip packages, referenced by sha256); every
torchvision classifier works when its weights file is in the torch cache or downloadable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.networks import count_parameters
from models.optimize import inference_module
from models.paths import REPO_ROOT, data_dir
from models.registry import DEFAULT_ALIAS, DEFAULT_ROOT
from models.registry.synced import STORE_HELP, open_registry, store_argument
from models.registry.manifest import git_commit, sha256_file
from models.runtime import load_model
from models.tta import class_probabilities, tta_mode
from training.cli import portable_path, run_cli, run_config
from training.imagenet_eval import (collect_photos, classify_photos, error_rates, format_misses, format_table,
                                    unknown_labels)
from training.imagenet_sources import OFFLINE_ENV, Pretrained, available_archs, pretrained

TASK = "imagenet"
LABELS_FILE = REPO_ROOT / "models" / "labels" / "imagenet_classes.txt"
SAMPLES_DIR = data_dir("imagenet-samples")
# How the service offers it: the best five of 1000 classes by default, twenty at most; small batches, two at a time.
SERVING = {"default_top_k": 5, "max_top_k": 20, "max_batch_size": 4, "concurrency": 2}


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class lines in index order ("tench, Tinca tinca", ...), shipped with the project."""
    labels = [line.strip() for line in LABELS_FILE.read_text().splitlines() if line.strip()]
    if len(labels) != 1000:
        raise RuntimeError(f"{LABELS_FILE} has {len(labels)} labels, expected 1000")
    return labels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.imagenet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=store_argument, default=str(DEFAULT_ROOT), help=f"{STORE_HELP} (default: %(default)s)")
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
    add_choose_arguments(sub.add_parser("choose", help="choose the production version on dev photos"))
    sub.add_parser("list", help="architectures `add` accepts")
    return p


def add_choose_arguments(ch: argparse.ArgumentParser) -> None:
    """The options of `choose` (run by `training.imagenet_choose.choose`)."""
    ch.add_argument("--images", type=Path, action="append", required=True,
                    help="a folder of labelled dev photos (repeat for several; each is also scored on its own)")
    ch.add_argument("--candidate", action="append", default=None,
                    help="only these candidates (repeatable; default: all, see training.imagenet_choose.CANDIDATES)")
    ch.add_argument("--max-p50-ms", type=float, default=50.0,
                    help="latency budget: p50 of one photo, bytes to top-5, as served (default: %(default)s)")
    ch.add_argument("--threads", type=int, default=1, help="intra-op threads (the service's default is 1)")
    ch.add_argument("--block", type=int, default=25,
                    help="photos each candidate classifies in turn before the next one's turn (default: %(default)s)")
    ch.add_argument("--version", default=None, help="id of the registered version (default: <UTC time>-<candidate>)")
    ch.add_argument("--no-promote", dest="promote", action="store_false", help="register, do not promote")
    ch.add_argument("--force", action="store_true",
                    help="promote past every gate refusal (recorded in the history); without it only past "
                         "'evaluated by different metrics', which the dev comparison replaces")
    ch.add_argument("--results-dir", type=Path, default=None,
                    help="where imagenet_dev.md/.json go (default: bench/results)")
    ch.set_defaults(fold_batchnorm=True, channels_last=True)


def build_manifest(source: Pretrained, args: argparse.Namespace, samples: dict[str, Any] | None,
                   commit: str | None) -> dict[str, Any]:
    """The descriptive manifest fields of a pretrained ImageNet classifier (registry fills in the rest).

    With `samples` (`score_samples`), the metrics hold them nested, flat as `samples_top1_error_strict` etc.,
    and as the headline `top1_error` / `top5_error`: the strict rule's errors on the photos scored.
    """
    metrics: dict[str, Any] = {
        "published_top1_accuracy": source.published.get("top1_accuracy"),
        "published_top5_accuracy": source.published.get("top5_accuracy"),
        "published_source": source.published.get("source"),
    }
    if samples:
        metrics["samples"] = samples
        metrics.update({f"samples_{k}": v for k, v in samples.items() if k.startswith("top")})
        metrics.update(top1_error=samples["top1_error_strict"], top5_error=samples["top5_error_strict"])
    return {
        "kind": "image-classification",
        "architecture": source.architecture,
        "labels": imagenet_labels(),
        "preprocessing": source.preprocessing,
        "inference": {"fold_batchnorm": args.fold_batchnorm, "channels_last": args.channels_last},
        "metrics": metrics,
        **({"evaluation": {"metric": "samples_top1_error_strict", "higher_is_better": False}} if samples else {}),
        "serving": SERVING,
        "training": {"config": run_config(args),
                     "note": "pretrained on ImageNet-1k by its publisher; registered as published, not trained here",
                     "torch": torch.__version__},
        "lineage": {"source": source.source, "code_commit": commit, "labels_sha256": sha256_file(LABELS_FILE)},
    }


def score_samples(source: Pretrained, args: argparse.Namespace) -> dict[str, Any] | None:
    """Errors on the sample photos (recorded as headline metrics), or None when the folder is absent."""
    if not args.samples or not args.samples.is_dir():
        return None
    options = {"fold_batchnorm": args.fold_batchnorm, "channels_last": args.channels_last}
    model = Unregistered(inference_module(source.network, options), source.preprocessing)
    summary = error_rates(classify_photos(model, collect_photos(args.samples)), imagenet_labels())
    # Latency depends on the machine and its load: bench.imagenet measures it; the manifest keeps errors only.
    return {**{k: v for k, v in summary.items() if not k.startswith("ms_")}, "images": portable_path(args.samples)}


@dataclass(frozen=True)
class Unregistered:
    """A network about to be registered, served on CPU as its version will be (`classify_photos` scores it)."""

    runner: Callable[[torch.Tensor], torch.Tensor]
    preprocessing: dict[str, Any]

    @torch.inference_mode()
    def predict_proba(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities as `models.runtime.LoadedModel` computes them (test-time augmentation included)."""
        return class_probabilities(self.runner, batch, tta_mode(self.preprocessing))


def add(args: argparse.Namespace) -> str:
    """Register `args.arch` as a new imagenet version; return its id."""
    commit = git_commit(Path(__file__).resolve().parent)
    source = pretrained(args.arch, allow_download=False if args.offline else None)
    registry = open_registry(args.store)
    manifest = build_manifest(source, args, score_samples(source, args), commit)
    version = registry.register(TASK, source.network, manifest, version=args.version, label=args.arch,
                                base_weights=source.base_weights)
    print(f"registered {TASK}/{version}: {args.arch}, {count_parameters(source.network):,} parameters, "
          f"input {source.preprocessing['size'][0]} px, weights sha256 {source.source['sha256'][:16]}...")
    if args.promote:
        registry.promote(TASK, version, actor="trainer:imagenet")
        print(f"{TASK}: {DEFAULT_ALIAS} -> {version}")
    return version


def evaluate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Score each requested version on `args.images`; print the table, the misses and the latency."""
    torch.set_num_threads(args.threads)
    registry = open_registry(args.store, sync=True)
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
        arch = model.manifest.architecture
        arch_name = arch.args.get("model") or arch.args.get("variant") or arch.name
        rows.append((model.version, str(arch_name), summary))
        print(f"\n{model.version}: misses under the report rule (top-5 shown)\n{format_misses(results, model.labels)}")
        report.append({"version": model.version, "architecture": arch_name, "parameters": model.manifest.parameters,
                       **summary})
    print(f"\n{len(photos)} photos in {args.images}\n{format_table(rows)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def dispatch(args: argparse.Namespace, argv: list[str] | None = None) -> None:
    """Run the subcommand `args.command` names (`argv`: the command line, for `choose`'s results file)."""
    if args.command == "list":
        print("\n".join(available_archs()))
    elif args.command == "add":
        add(args)
    elif args.command == "choose":
        from training.imagenet_choose import choose  # imports this module: loaded on use

        choose(args, argv)
    else:
        evaluate(args)


def main(argv: list[str] | None = None) -> int:
    """The command line; the exit status is `training.cli.run_cli`'s (0, or 2 with the error on stderr)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(build_parser(), lambda args: dispatch(args, argv), argv)


if __name__ == "__main__":
    sys.exit(main())
