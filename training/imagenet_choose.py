"""`python -m training.imagenet choose`: the ImageNet default, chosen on dev photos (issue 15).

Candidates (`CANDIDATES`): EfficientNet-Lite0/1/2 with TensorFlow's evaluation preprocessing (bicubic resize of
the shorter side to res + 32, centre crop res = 224/240/260, (x - 127) / 128) and Lite0 with the bilinear
resize served before; each plain and with flip test-time augmentation (`models.tta`, "hflip"). Each is
registered into a scratch store and loaded as the service loads it (`models.runtime.load_model` with the image
kind's CPU backend, `--threads`); every photo is then classified alone, bytes to top-5, by every candidate,
`--block` photos at a time in turn, so the machine's load falls on all of them alike.

Errors (`dev_errors`): top-1 and top-5 on all the `--images` photos together and per folder, a photo named by
its WordNet id right only for its own class, one named by class under the strict rule (`training.imagenet_eval`),
each with a Wilson 95% interval. The choice (`pick`): the lowest top-1 error among the candidates whose p50 is
within `--max-p50-ms`; ties: lower top-5, then faster. The chosen one is registered in `--store` with its dev
metrics, evaluated by `dev_top1_error`, and promoted: past the gate's "evaluated by different metrics" refusal
(the dev comparison, which includes the incumbent's configuration, replaces it, and the reason says so), past any
other refusal only with `--force` (recorded). Writes `imagenet_dev.md` (+ `.json` with every photo's top-5).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.report import RESULTS_DIR, command_line
from models.onnx_backend import BackendError
from models.paths import REPO_ROOT
from models.pretrained import lite_preset
from models.registry import DEFAULT_ALIAS, ModelRegistry, PromotionRefusedError, RegistryError
from models.registry.synced import open_registry
from models.registry.manifest import git_commit
from models.registry.promotion import Promotion
from models.runtime import LoadedModel, load_model
from training.cli import portable_path
from training.imagenet import TASK, build_manifest, imagenet_labels
from training.imagenet_dev_report import publish_report
from training.imagenet_eval import LabelledPhoto, PhotoResult, classify_one, collect_photos, is_hit
from training.imagenet_sources import Pretrained, efficientnet_lite

SERVED_BACKEND = "onnxruntime"  # app.kinds.image_classification.ImageClassification.default_backend (CPU)
ACTOR = "trainer:imagenet-choose"
METRIC = "dev_top1_error"
DIFFERENT_METRICS = "evaluated by different metrics"  # the start of models.registry.gates' refusal
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Candidate:
    """One way to serve: an EfficientNet-Lite variant, its resize filter and its test-time augmentation."""

    variant: str
    interpolation: str
    tta: str | None = None

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.interpolation}{'-flip' if self.tta else ''}"

    @property
    def preprocessing(self) -> dict[str, Any]:
        return lite_preset(self.variant, interpolation=self.interpolation, tta=self.tta)


CANDIDATES = tuple(Candidate(variant, interpolation, tta)
                   for variant, interpolation in (("lite0", "bilinear"), ("lite0", "bicubic"), ("lite1", "bicubic"),
                                                  ("lite2", "bicubic"))
                   for tta in (None, "hflip"))


@dataclass
class Scored:
    """A candidate, what served it and its results on every dev photo (in the order of `DevSets.photos`)."""

    candidate: Candidate
    backend: str
    results: list[PhotoResult]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)


def wilson_interval(errors: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of an error rate `errors`/`n` (95% for the default `z`)."""
    if n <= 0:
        raise ValueError("an interval needs at least one photo")
    p, z2 = errors / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 (or n) errors the bound is exactly 0 (or 1); the arithmetic leaves a rounding residue.
    return (0.0 if errors == 0 else centre - half), (1.0 if errors == n else centre + half)


def dev_errors(results: list[PhotoResult], classes: list[str]) -> dict[str, Any]:
    """Top-1/top-5 misses, error rates (4 decimals) and Wilson 95% intervals of `results` (strict rule)."""
    n = len(results)
    miss1 = sum(not is_hit(classes, r.top[0][0], r.photo, "strict") for r in results)
    miss5 = sum(not any(is_hit(classes, i, r.photo, "strict") for i, _ in r.top[:5]) for r in results)
    out: dict[str, Any] = {"photos": n, "top1_misses": miss1, "top5_misses": miss5}
    for key, misses in (("top1_error", miss1), ("top5_error", miss5)):
        out[key] = round(misses / n, 4)
        out[f"{key}_ci95"] = [round(x, 4) for x in wilson_interval(misses, n)]
    return out


def selected(names: list[str] | None) -> list[Candidate]:
    """The candidates `names` names (all when None); `ValueError` names the valid ones."""
    if not names:
        return list(CANDIDATES)
    known = {c.name: c for c in CANDIDATES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown candidate(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(names)]


def results_file(args: argparse.Namespace) -> str:
    """Where the results file goes, relative to the repository when inside it."""
    path = (args.results_dir or RESULTS_DIR).resolve() / "imagenet_dev.md"
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return portable_path(path)


def candidate_manifest(source: Pretrained, args: argparse.Namespace) -> dict[str, Any]:
    """`training.imagenet.build_manifest` for `source` (its preset is the candidate's), with a JSON-ready config."""
    manifest = build_manifest(source, args, None, git_commit(Path(__file__).resolve().parent))
    config = manifest["training"]["config"]
    config["images"] = [portable_path(p) for p in args.images]
    config["results_dir"] = portable_path(args.results_dir or RESULTS_DIR)
    return manifest


def load_candidates(candidates: list[Candidate], args: argparse.Namespace,
                    scratch: Path) -> tuple[dict[str, LoadedModel], dict[str, Pretrained]]:
    """Every candidate registered into `scratch` and loaded as served; also each candidate's `Pretrained`."""
    registry, sources, models = ModelRegistry(scratch), {}, {}
    networks = {v: efficientnet_lite(v) for v in dict.fromkeys(c.variant for c in candidates)}
    for c in candidates:
        source = sources[c.name] = dataclasses.replace(networks[c.variant], preprocessing=c.preprocessing)
        registry.register(TASK, source.network, candidate_manifest(source, args), version=c.name,
                          base_weights=source.base_weights)
        try:
            models[c.name] = load_model(registry, TASK, c.name, torch.device("cpu"), backend=SERVED_BACKEND,
                                        threads=args.threads)
        except BackendError as exc:  # what the service does too: serve with torch
            print(f"{c.name}: {exc}; measured with torch", file=sys.stderr)
            models[c.name] = load_model(registry, TASK, c.name, torch.device("cpu"))
    return models, sources


def classify_in_turn(models: dict[str, LoadedModel], photos: list[LabelledPhoto], block: int,
                     warmup: int = 2) -> dict[str, list[PhotoResult]]:
    """Each photo alone through each model (`classify_one`), `block` photos per model in turn."""
    results: dict[str, list[PhotoResult]] = {name: [] for name in models}
    for photo in photos[:warmup]:
        for model in models.values():
            classify_one(model, photo.path.read_bytes())
    for start in range(0, len(photos), max(1, block)):
        chunk = [(photo, photo.path.read_bytes()) for photo in photos[start:start + block]]
        for name, model in models.items():
            results[name].extend(PhotoResult(photo, *classify_one(model, data)) for photo, data in chunk)
    return results


def summarise(scored: Scored, sets: dict[str, list[LabelledPhoto]], classes: list[str]) -> dict[str, Any]:
    """All-photo errors, per-folder errors and the p50 ms of one photo."""
    by_path = {r.photo.path: r for r in scored.results}
    return {**dev_errors(scored.results, classes),
            "sets": {name: dev_errors([by_path[p.path] for p in photos], classes) for name, photos in sets.items()},
            "ms_p50": round(statistics.median(r.seconds * 1000 for r in scored.results), 2)}


def pick(scored: list[Scored], max_p50_ms: float) -> Scored | None:
    """The lowest top-1 error within the latency budget; ties: fewer top-5 misses, then the lower p50."""
    eligible = [s for s in scored if s.summary["ms_p50"] <= max_p50_ms]
    key = lambda s: (s.summary["top1_misses"], s.summary["top5_misses"], s.summary["ms_p50"])  # noqa: E731
    return min(eligible, key=key) if eligible else None


def dev_metrics(chosen: Scored, published: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The manifest's metrics: the dev figures first (the page shows the first four), then the published ones."""
    s = chosen.summary
    return {"dev_top1_error": s["top1_error"], "dev_top5_error": s["top5_error"], "dev_photos": s["photos"],
            "dev_top1_error_ci95": s["top1_error_ci95"], "dev_top5_error_ci95": s["top5_error_ci95"],
            "dev_sets": {name: {"images": portable_path(path), **s["sets"][name]}
                         for name, path in zip(s["sets"], args.images)},
            "dev_choice": {"rule": f"lowest top-1 error with p50 <= {args.max_p50_ms:g} ms (one photo, bytes to "
                                   "top-5, as served); ties: top-5, then faster", "candidate": chosen.candidate.name,
                           "results": results_file(args)},
            **published}


def register_choice(chosen: Scored, source: Pretrained, args: argparse.Namespace) -> str:
    """Register the chosen candidate in `args.store` with its dev metrics; return the version id."""
    manifest = candidate_manifest(source, args)
    manifest["metrics"] = dev_metrics(chosen, manifest["metrics"], args)
    manifest["evaluation"] = {"metric": METRIC, "higher_is_better": False}
    return open_registry(args.store).register(TASK, source.network, manifest, version=args.version,
                                              label=f"efficientnet_{chosen.candidate.name}",
                                              base_weights=source.base_weights)


def incumbent_candidate(registry: ModelRegistry, scored: list[Scored]) -> tuple[str | None, Scored | None]:
    """The production version, and the candidate serving exactly as it does (network and preset), if any."""
    try:
        manifest = registry.manifest(TASK, DEFAULT_ALIAS)
    except RegistryError:  # no imagenet task, or no production yet: nothing to compare with
        return None, None
    for s in scored:
        c = s.candidate
        if manifest.architecture.args.get("variant") == c.variant and manifest.preprocessing == c.preprocessing:
            return manifest.version, s
    return manifest.version, None


def promotion_reason(chosen: Scored, scored: list[Scored], incumbent: tuple[str | None, Scored | None],
                     args: argparse.Namespace) -> str:
    """One sentence for the history: the dev-set comparison behind the move."""
    s, (version, same) = chosen.summary, incumbent
    text = (f"dev-set comparison of {len(scored)} candidates on "
            f"{s['photos']} photos ({', '.join(p.name for p in args.images)}; {results_file(args)}): "
            f"{chosen.candidate.name} top-1 {s['top1_error']:.2%}, top-5 {s['top5_error']:.2%}, "
            f"p50 {s['ms_p50']:.1f} ms <= {args.max_p50_ms:g} ms")
    if version and same is not None:
        text += (f"; the incumbent {version} ({same.candidate.name}) top-1 {same.summary['top1_error']:.2%}, "
                 f"top-5 {same.summary['top5_error']:.2%} on the same photos")
    return text


def promote_choice(registry: ModelRegistry, version: str, reason: str,
                   force: bool) -> tuple[Promotion | None, list[str]]:
    """Promote `version` to production behind the gates; past a refusal only when every reason is the
    different-metrics one, or with `force`. Returns (the promotion or None, the refusals)."""
    try:
        return registry.promote_detailed(TASK, version, actor=ACTOR, reason=reason), []
    except PromotionRefusedError as exc:
        if force or all(r.startswith(DIFFERENT_METRICS) for r in exc.reasons):
            return registry.promote_detailed(TASK, version, actor=ACTOR, reason=reason, force=True), exc.reasons
        return None, exc.reasons


def choose(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate, pick, register, promote (unless `--no-promote`) and publish (the command line `argv`, default
    `sys.argv[1:]`, goes in the results file); return the JSON report. `RuntimeError` when no candidate fits
    the latency budget (the results are written, nothing is registered)."""
    started = time.time()
    torch.set_num_threads(args.threads)
    candidates, classes = selected(args.candidate), imagenet_labels()
    sets = {path.name: collect_photos(path) for path in args.images}
    if len(sets) != len(args.images):
        raise ValueError("--images folders must have distinct names (they name the dev sets)")
    photos = [photo for group in sets.values() for photo in group]
    with tempfile.TemporaryDirectory(prefix="imagenet-choose-") as scratch:
        models, sources = load_candidates(candidates, args, Path(scratch))
        results = classify_in_turn(models, photos, args.block)
        scored = [Scored(c, models[c.name].backend, results[c.name]) for c in candidates]
    for s in scored:
        s.summary = summarise(s, sets, classes)
    chosen = pick(scored, args.max_p50_ms)
    registry = open_registry(args.store, sync=True)
    outcome: dict[str, Any] = {"chosen": None, "version": None, "promoted": False, "refusals": []}
    if chosen is not None:
        incumbent = incumbent_candidate(registry, scored)
        version = register_choice(chosen, sources[chosen.candidate.name], args)
        outcome.update(chosen=chosen.candidate.name, version=version, incumbent=incumbent[0])
        print(f"registered {TASK}/{version} ({chosen.candidate.name})")
        if args.promote:
            reason = promotion_reason(chosen, scored, incumbent, args)
            promotion, refusals = promote_choice(registry, version, reason, args.force)
            outcome.update(promoted=promotion is not None, refusals=refusals, reason=reason)
            if promotion is None:
                print(f"{TASK}: not promoted, the gate refuses: {'; '.join(refusals)} (--force promotes anyway)")
            else:
                print(f"{TASK}: {DEFAULT_ALIAS} -> {version}" + (f" (forced past: {'; '.join(refusals)})"
                                                                  if refusals else ""))
    report = publish_report(scored, sets, args, outcome, command_line("python -m training.imagenet", argv), started)
    if chosen is None:
        raise RuntimeError(f"no candidate has a p50 within {args.max_p50_ms:g} ms: nothing registered "
                           "(see the table)")
    return report
