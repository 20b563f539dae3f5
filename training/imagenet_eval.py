"""Top-1/top-5 error of ImageNet classifiers on a folder of photos named by class.

Photos are `DIR/<label>.jpg` (the report's layout: `volcano.jpg`; a trailing `_2`, `-2` or `2`
is ignored, `_` reads as a space) or an image-folder tree `DIR/<label>/*.jpg`. Two matching rules:
- report: a prediction is right when its class line starts with the label (the student report's
  `class_name.startswith(file_label)`, case-insensitive), so "plate" also accepts "plate rack";
- strict: the first comma-separated name of the class line equals the label (case-insensitive).
A file or folder named by its WordNet id (`n01440764_tench.JPEG`, `n01440764/`) names its class index
(`models/labels/imagenet_wnids.txt`, index order): under both rules only that class is right, so the
classes sharing a name ("crane" the bird and the machine, "maillot", "cardigan") are told apart.
"""

from __future__ import annotations

import functools
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from models.imaging import DEFAULT_MAX_PIXELS
from models.paths import REPO_ROOT
from models.preprocessing import image_to_array, to_tensor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
RULES = ("report", "strict")
_COPY_SUFFIX = re.compile(r"(?:[_\-\s]*\(?\d+\)?)$")
WNIDS_FILE = REPO_ROOT / "models" / "labels" / "imagenet_wnids.txt"  # ImageNet-1k WordNet ids, class index order
_WNID_NAME = re.compile(r"^(n\d{8})(?:_(.+))?$")


class Classifier(Protocol):
    """What `classify_photos` scores: a `models.runtime.LoadedModel`, or a network not registered yet."""

    @property
    def preprocessing(self) -> dict[str, Any]: ...

    def predict_proba(self, batch: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    label: str
    index: int | None = None  # the class index, when the name gives the WordNet id


@dataclass(frozen=True)
class PhotoResult:
    photo: LabelledPhoto
    top: list[tuple[int, float]]  # (class index, probability), best first
    seconds: float  # decode + preprocess + forward, this photo alone


def label_from_name(name: str) -> str:
    """'volcano' from 'volcano', 'Volcano_2', 'great_white_shark' -> 'great white shark'."""
    stem = _COPY_SUFFIX.sub("", name) or name
    return stem.replace("_", " ").strip().lower()


@functools.cache
def wnid_indices() -> dict[str, int]:
    """WordNet id -> ImageNet-1k class index ("n01440764" -> 0), from `WNIDS_FILE`."""
    wnids = [line.strip() for line in WNIDS_FILE.read_text().splitlines() if line.strip()]
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise RuntimeError(f"{WNIDS_FILE} has {len(set(wnids))} distinct WordNet ids, expected 1000")
    return {wnid: index for index, wnid in enumerate(wnids)}


def labelled(path: Path, name: str) -> LabelledPhoto:
    """The photo at `path` labelled by `name` (its stem or its folder's name); `ValueError` for a WordNet id
    that is not an ImageNet-1k class."""
    match = _WNID_NAME.match(name)
    if not match:
        return LabelledPhoto(path, label_from_name(name))
    wnid, rest = match.groups()
    if wnid not in wnid_indices():
        raise ValueError(f"{path}: {wnid} is not the WordNet id of an ImageNet-1k class ({WNIDS_FILE})")
    return LabelledPhoto(path, label_from_name(rest) if rest else wnid, wnid_indices()[wnid])


def collect_photos(directory: Path) -> list[LabelledPhoto]:
    """Labelled photos of `directory`: files named by class, or one sub-folder per class."""
    if not directory.is_dir():
        raise FileNotFoundError(f"no such folder: {directory}")
    photos = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            photos.append(labelled(path, path.stem))
        elif path.is_dir():
            photos.extend(labelled(p, path.name) for p in sorted(path.iterdir())
                          if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise FileNotFoundError(f"{directory} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return photos


def matches(class_line: str, label: str, rule: str) -> bool:
    """Whether the class line `class_line` counts as the photo label `label` under `rule`."""
    line, label = class_line.lower(), label.lower()
    if rule == "report":
        return line.startswith(label)
    if rule == "strict":
        return line.split(",")[0].strip() == label
    raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")


def is_hit(classes: list[str], index: int, photo: LabelledPhoto, rule: str) -> bool:
    """Whether predicting class `index` is right for `photo` under `rule` (its own index when it has one)."""
    if photo.index is not None:
        return index == photo.index
    return matches(classes[index], photo.label, rule)


def unknown_labels(photos: list[LabelledPhoto], classes: list[str]) -> list[str]:
    """Photo labels that no class line matches even under the lenient rule (likely misnamed files)."""
    return sorted({p.label for p in photos
                   if p.index is None and not any(matches(c, p.label, "report") for c in classes)})


def classify_one(model: Classifier, data: bytes, *, k: int = 5) -> tuple[list[tuple[int, float]], float]:
    """The top-`k` (class index, probability) of the photo `data` alone (a batch of one, as a client sends
    it), and the seconds from bytes to top-k (decode, preprocess, forward pass(es), top-k)."""
    preset = model.preprocessing
    started = time.perf_counter()
    array = image_to_array(data, preset, max_pixels=DEFAULT_MAX_PIXELS)
    probabilities = model.predict_proba(to_tensor([array], preset))[0]
    values, indices = probabilities.topk(k)
    return list(zip(indices.tolist(), values.tolist())), time.perf_counter() - started


def classify_photos(model: Classifier, photos: list[LabelledPhoto], *, k: int = 5,
                    warmup: int = 2) -> list[PhotoResult]:
    """Each photo alone (batch of one, as a client would send it), timed from bytes to top-k."""
    for photo in photos[:warmup]:  # first calls pay one-off allocation costs
        classify_one(model, photo.path.read_bytes(), k=k)
    return [PhotoResult(photo, *classify_one(model, photo.path.read_bytes(), k=k)) for photo in photos]


def error_rates(results: list[PhotoResult], classes: list[str]) -> dict[str, Any]:
    """Top-1 and top-5 error under both rules, and the latency per photo."""
    summary: dict[str, Any] = {"photos": len(results)}
    for rule in RULES:
        hit1 = sum(is_hit(classes, r.top[0][0], r.photo, rule) for r in results)
        hit5 = sum(any(is_hit(classes, i, r.photo, rule) for i, _ in r.top[:5]) for r in results)
        summary[f"top1_error_{rule}"] = round(1 - hit1 / len(results), 4)
        summary[f"top5_error_{rule}"] = round(1 - hit5 / len(results), 4)
    times = [r.seconds * 1000 for r in results]
    summary["ms_per_image_p50"] = round(statistics.median(times), 2)
    summary["ms_per_image_mean"] = round(statistics.fmean(times), 2)
    return summary


def misses(results: list[PhotoResult], classes: list[str], rule: str = "report") -> list[PhotoResult]:
    """Photos whose top-1 is wrong under `rule`."""
    return [r for r in results if not is_hit(classes, r.top[0][0], r.photo, rule)]


def format_table(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    """The report's table: one row per model, errors in % under both rules, latency."""
    header = (f"{'version':<40} {'architecture':<22} {'top-1 err':>10} {'top-5 err':>10} "
              f"{'top-1 strict':>12} {'top-5 strict':>12} {'ms/img p50':>10}")
    lines = [header, "-" * len(header)]
    for version, arch, s in rows:
        lines.append(f"{version:<40} {arch:<22} {s['top1_error_report']:>10.2%} {s['top5_error_report']:>10.2%} "
                     f"{s['top1_error_strict']:>12.2%} {s['top5_error_strict']:>12.2%} {s['ms_per_image_p50']:>10.1f}")
    return "\n".join(lines)


def format_misses(results: list[PhotoResult], classes: list[str]) -> str:
    """Per missed photo (report rule, top-1): its top-5 with probabilities."""
    lines = []
    for r in misses(results, classes):
        guesses = "; ".join(f"{classes[i].split(',')[0]} {p:.1%}" for i, p in r.top[:5])
        lines.append(f"  {r.photo.path.name} ({r.photo.label}): {guesses}")
    return "\n".join(lines) if lines else "  (none)"

