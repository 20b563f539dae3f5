"""Image folders in torchvision's `ImageFolder` layout: `DIR/train/<class>/*`, optional `DIR/val/` (or
`validation/`) and `DIR/test/`; the classes, the splits and their lineage.

Class names are the sorted sub-folders of `train/` (torchvision's `find_classes` order; hidden folders are
skipped). Images are the files with an `IMAGE_SUFFIXES` suffix anywhere under a class folder, in sorted path
order. A split without a folder is drawn from the training images: a stratified split seeded by its own
generator (so the split never moves the training run's random streams), which keeps at least one image of
every class in training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.registry.manifest import sha256_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
VAL_DIRS = ("val", "validation")
TEST_DIRS = ("test",)
FILES_IN_MANIFEST = 1000  # above this many images, the lineage keeps their count and one digest, not each hash


@dataclass(frozen=True)
class Split:
    """Images of one split with their class indices."""

    paths: list[Path]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class FolderSplits:
    """The classes and the train / validation / test splits of an image folder; `test` is None when there is
    none. `sources` says where each split came from (its folder, or "train (seeded N% split)")."""

    root: Path
    labels: list[str]
    train: Split
    validation: Split
    test: Split | None
    sources: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: len(split) for name, split in splits.items() if split is not None}


def class_names(root: Path) -> list[str]:
    """Class names: the sub-folders of `root/train`, sorted; at least two, each holding an image."""
    train = root / "train"
    if not train.is_dir():
        raise FileNotFoundError(f"{train} not found: expected the ImageFolder layout {root}/train/<class>/*.jpg "
                                "(and optionally val/ or validation/, and test/)")
    names = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise FileNotFoundError(f"{train} needs at least two class folders (train/<class>/), found {names}")
    empty = [name for name in names if not class_files(train / name)]
    if empty:
        raise FileNotFoundError(f"{train}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders "
                                f"{', '.join(empty)}")
    return names


def class_files(folder: Path) -> list[Path]:
    """The images under `folder` (any depth, hidden names skipped), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def load_split(root: Path, split: str, classes: list[str], limit: int = 0) -> Split:
    """The images of `root/split/<class>/` (at most `limit` per class when > 0); a missing class folder
    contributes none."""
    paths, targets = [], []
    for index, name in enumerate(classes):
        files = class_files(root / split / name)
        files = files[:limit] if limit else files
        paths += files
        targets += [index] * len(files)
    return Split(paths, targets)


def split_folder(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `root/<name>` that is a folder, else None."""
    return next((root / name for name in names if (root / name).is_dir()), None)


def check_classes(folder: Path, classes: list[str]) -> None:
    """`FileNotFoundError` when `folder` has class folders that train/ does not, or no images at all."""
    extra = sorted(p.name for p in folder.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and p.name not in classes)
    if extra:
        raise FileNotFoundError(f"{folder} has class folders that train/ lacks: {', '.join(extra)}")


def stratified_split(split: Split, fraction: float, generator: torch.Generator) -> tuple[Split, Split]:
    """(kept, drawn): of each class's n images, max(1, round(fraction * n)) are drawn at random, but at least
    one always stays kept. Both keep the original order."""
    drawn_index: set[int] = set()
    for target in sorted(set(split.targets)):
        members = [i for i, t in enumerate(split.targets) if t == target]
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        order = torch.randperm(len(members), generator=generator).tolist()
        drawn_index.update(members[i] for i in order[:count])

    def pick(keep: bool) -> Split:
        index = [i for i in range(len(split.paths)) if (i in drawn_index) != keep]
        return Split([split.paths[i] for i in index], [split.targets[i] for i in index])

    return pick(True), pick(False)


def load_folder(root: Path, *, val_fraction: float, test_fraction: float, seed: int, limit: int = 0) -> FolderSplits:
    """The splits of `root` (`limit`: at most that many images per class from each folder). Validation comes
    from `val/` or `validation/`, else `val_fraction` of train; test from `test/`, else `test_fraction` of
    train (0: no test split)."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} not found: expected {root}/train/<class>/*.jpg")
    labels = class_names(root)
    train = load_split(root, "train", labels, limit)
    generator = torch.Generator().manual_seed(seed)
    sources = {"train": "train/"}
    splits: dict[str, Split | None] = {}
    for name, folders, fraction in (("validation", VAL_DIRS, val_fraction), ("test", TEST_DIRS, test_fraction)):
        folder = split_folder(root, folders)
        if folder is not None:
            check_classes(folder, labels)
            splits[name] = load_split(root, folder.name, labels, limit)
            if not splits[name].paths:
                raise FileNotFoundError(f"{folder} holds no images in <class>/ folders named as in train/")
            sources[name] = f"{folder.name}/"
        elif fraction > 0:
            if not 0 < fraction < 1:
                raise ValueError(f"the {name} fraction must be in (0, 1), got {fraction}")
            train, splits[name] = stratified_split(train, fraction, generator)
            if not splits[name].paths:
                raise ValueError(f"no {name} folder and too few training images to draw a {name} split from "
                                 "(a class needs at least 2 images)")
            sources[name] = f"train (seeded {fraction:.0%} split)"
        elif name == "validation":
            raise FileNotFoundError(f"{root} has no val/ or validation/ folder and the validation fraction is 0")
        else:
            splits[name] = None
    return FolderSplits(root, labels, train, splits["validation"], splits["test"], sources)


def file_hashes(*splits: Split, root: Path) -> dict[str, str]:
    """sha256 of every image, keyed by its path relative to `root` (the dataset's lineage)."""
    return {str(p.relative_to(root)): sha256_file(p) for split in splits for p in split.paths}


def dataset_lineage(data: FolderSplits) -> dict[str, object]:
    """The lineage of the images a run used: every file's sha256 (`files`) up to `FILES_IN_MANIFEST` images;
    always their count and `files_sha256`, the sha256 of the sorted "<sha256>  <path>" lines."""
    splits = [s for s in (data.train, data.validation, data.test) if s is not None]
    hashes = file_hashes(*splits, root=data.root)
    listing = "".join(f"{digest}  {path}\n" for path, digest in sorted(hashes.items()))
    lineage: dict[str, object] = {"splits": data.sources, "counts": data.counts(), "file_count": len(hashes),
                                  "files_sha256": hashlib.sha256(listing.encode()).hexdigest()}
    if len(hashes) <= FILES_IN_MANIFEST:
        lineage["files"] = hashes
    return lineage
