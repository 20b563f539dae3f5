"""`python -m bench.imagenet`: the ImageNet zoo's accuracy, forward-pass variants and HTTP latency.

1. accuracy: top-1/top-5 error (report and strict rules) of EfficientNet-Lite0/1/2 (+ `--torchvision`
   names whose weights are in the torch cache) on `--images`, registered into a scratch store;
2. preprocessing (`--preprocessing`): TF-lite vs ImageNet normalisation, bilinear vs bicubic;
3. forward pass (`--forward`): batch of one, threads 1 and 2 x {plain, batch-norm folded,
   channels-last, both}, rounds interleaved so machine load hits every variant alike;
4. HTTP: p50/p90/p99 of `POST /imagenet/top5` and `POST /components` with one 640x480 JPEG over one keep-alive connection,
   against a real uvicorn serving the committed store (production version).
Writes bench/results/imagenet.md (committed, headed by date, commit, machine and command) and imagenet.json
(git-ignored). Timings on a machine shared with other jobs are pessimistic.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import io
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from PIL import Image

from bench.http import free_port, running_server
from bench.report import RESULTS_DIR, command_line, markdown_table, publish
from models.image_presets import IMAGENET_MEAN, IMAGENET_STD, TF_LITE_MEAN, TF_LITE_STD, rgb_preset
from models.optimize import inference_module
from models.paths import data_dir
from models.registry import ModelRegistry
from models.runtime import load_model
from training import imagenet as zoo
from training.imagenet_eval import (classify_photos, collect_photos, error_rates, format_misses, format_table,
                                    matches)
from training.imagenet_sources import WeightsUnavailableError

RESULTS = RESULTS_DIR  # the scratch store and the server log go beside the results
SAMPLES_DIR = data_dir("imagenet-samples")
COMPONENT_PHOTO = data_dir("components", "validation", "relay", "relay_12.jpg")
LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
VARIANTS = {"plain": {}, "fold_bn": {"fold_batchnorm": True}, "channels_last": {"channels_last": True},
            "fold_bn+channels_last": {"fold_batchnorm": True, "channels_last": True}}


def accuracy(images: Path, archs: list[str], store: Path) -> tuple[list[dict[str, Any]], str]:
    """Register each arch into a scratch `store` and score it on `images` (batch of one, 1 thread)."""
    shutil.rmtree(store, ignore_errors=True)
    torch.set_num_threads(1)
    photos = collect_photos(images)
    rows, report, text = [], [], []
    for arch in archs:
        try:
            version = zoo.add(zoo.build_parser().parse_args(["--store", str(store), "add", "--arch", arch, "--offline",
                                                             "--no-samples"]))
        except WeightsUnavailableError as exc:
            print(f"skipping {arch}: {exc}", file=sys.stderr)
            continue
        model = load_model(ModelRegistry(store), zoo.TASK, version, torch.device("cpu"))
        results = classify_photos(model, photos)
        summary = error_rates(results, model.labels)
        rows.append((version, arch, summary))
        report.append({"arch": arch, "parameters": model.manifest.parameters, **summary})
        text.append(f"{arch} misses (report rule):\n{format_misses(results, model.labels)}")
    return report, f"{len(photos)} photos in {images}\n\n{format_table(rows)}\n\n" + "\n".join(text)


def forward_variants(store: Path, rounds: int, reps: int) -> list[dict[str, Any]]:
    """Median ms of one forward pass (batch of one) per arch x threads x variant, rounds interleaved."""
    registry = ModelRegistry(store)
    rows = []
    for version in registry.versions(zoo.TASK):
        model = load_model(registry, zoo.TASK, version, torch.device("cpu"))
        size = model.preprocessing["size"]
        x = torch.randn(1, 3, *size)
        runners = {name: inference_module(copy.deepcopy(model.network), options) for name, options in VARIANTS.items()}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            times: dict[str, list[float]] = {name: [] for name in runners}
            with torch.inference_mode():
                for runner in runners.values():
                    runner(x)  # warm-up
                for _ in range(rounds):
                    for name, runner in runners.items():
                        for _ in range(reps):
                            started = time.perf_counter()
                            runner(x)
                            times[name].append((time.perf_counter() - started) * 1000)
            for name, values in times.items():
                rows.append({"version": version, "input": size[0], "threads": threads, "variant": name,
                             "ms_p50": round(statistics.median(values), 2),
                             "ms_min": round(min(values), 2)})
    torch.set_num_threads(1)
    return rows


def preprocessing_study(images: Path, store: Path) -> list[dict[str, Any]]:
    """Errors and mean true-class NLL of each registered lite version under alternative presets:
    TF-lite (127/128) vs ImageNet mean/std normalisation, bilinear vs bicubic resize."""
    registry = ModelRegistry(store)
    photos = collect_photos(images)
    rows = []
    for version in registry.versions(zoo.TASK):
        model = load_model(registry, zoo.TASK, version, torch.device("cpu"))
        base = model.preprocessing
        for norm, (mean, std) in {"tf-lite 127/128": (TF_LITE_MEAN, TF_LITE_STD),
                                  "imagenet mean/std": (IMAGENET_MEAN, IMAGENET_STD)}.items():
            for interpolation in ("bilinear", "bicubic"):
                preset = rgb_preset(base["size"][0], base["resize"], mean, std, interpolation=interpolation)
                variant = dataclasses.replace(model, manifest=model.manifest.model_copy(update={"preprocessing": preset}))
                results = classify_photos(variant, photos, k=1000, warmup=0)
                summary = error_rates(results, model.labels)
                nll = [-math.log(max(dict(r.top).get(_true_index(model.labels, r.photo.label), 0.0), 1e-12))
                       for r in results]
                rows.append({"version": version, "normalisation": norm, "interpolation": interpolation,
                             "top1_error": summary["top1_error_report"], "top5_error": summary["top5_error_report"],
                             "true_class_nll": round(statistics.fmean(nll), 3)})
    return rows


def _true_index(classes: list[str], label: str) -> int:
    return next(i for i, line in enumerate(classes) if matches(line, label, "strict") or matches(line, label, "report"))


def photo_640x480(source: Path) -> bytes:
    """A 640x480 JPEG (quality 90) made from the photo at `source`."""
    image = Image.open(source).convert("RGB").resize((640, 480), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def http_latency(jpeg: bytes, requests: int, path: str = "/imagenet/top5") -> dict[str, Any]:
    """Latency of POST `path` over one keep-alive connection, sequential requests."""
    with running_server(free_port(), RESULTS / "imagenet-server.log") as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            files = {"file": ("photo.jpg", jpeg, "image/jpeg")}
            for _ in range(10):  # warm-up
                client.post(path, files=files).raise_for_status()
            times, body = [], None
            for _ in range(requests):
                started = time.perf_counter()
                response = client.post(path, files=files)
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                body = response.json()
    times.sort()
    pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))], 2)  # noqa: E731
    return {"requests": requests, "p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99),
            "model": body["model"], "top1": body["predictions"][0]["label"]}


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    p = argparse.ArgumentParser(prog="python -m bench.imagenet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=SAMPLES_DIR, help="labelled photos (default: %(default)s)")
    p.add_argument("--torchvision", nargs="*", default=[], help="torchvision archs to add when cached (e.g. alexnet)")
    p.add_argument("--forward", action="store_true", help="also time forward-pass variants")
    p.add_argument("--preprocessing", action="store_true", help="also compare normalisations and resize filters")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--skip-http", action="store_true")
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    store = RESULTS / "imagenet-store"
    report: dict[str, Any] = {"torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    report["accuracy"], table = accuracy(args.images, [*LITE, *args.torchvision], store)
    md = ["## Accuracy (batch of one, 1 thread)", "", "```", table, "```"]
    if args.preprocessing:
        report["preprocessing"] = preprocessing_study(args.images, store)
        md += ["", "## Preprocessing alternatives (report rule; NLL = mean -log p(true class))", "",
               markdown_table(["version", "normalisation", "resize", "top-1 err", "top-5 err", "NLL"],
                              [[r["version"], r["normalisation"], r["interpolation"], f"{r['top1_error']:.0%}",
                                f"{r['top5_error']:.0%}", r["true_class_nll"]] for r in report["preprocessing"]],
                              align="lllrrr")]
    if args.forward:
        report["forward"] = forward_variants(store, args.rounds, args.reps)
        md += ["", "## Forward pass, batch of one (ms)", "",
               markdown_table(["version", "input", "threads", "variant", "p50", "min"],
                              [[r["version"], r["input"], r["threads"], r["variant"], r["ms_p50"], r["ms_min"]]
                               for r in report["forward"]], align="lrrlrr")]
    if not args.skip_http:
        sources = {"/imagenet/top5": args.images / "teapot.jpg", "/components": COMPONENT_PHOTO}
        report["http"] = {path: http_latency(photo_640x480(source), args.requests, path)
                          for path, source in sources.items()}
        for path, h in report["http"].items():
            md += ["", f"## POST {path}, one 640x480 JPEG, one connection ({h['requests']} requests)", "",
                   f"p50 {h['p50_ms']} ms, p90 {h['p90_ms']} ms, p99 {h['p99_ms']} ms "
                   f"(model {h['model']['version']}, top-1 {h['top1']!r})"]
    publish("imagenet", "python -m bench.imagenet: the ImageNet zoo and POST /imagenet/top5, /components",
            "\n".join(md), report, command=command_line(p.prog, argv), started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
