"""MNIST from the standard idx files (optionally gzipped), with torchvision's download as the online fallback."""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.paths import data_dir

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """`models.paths.data_dir("mnist")` when it exists (CI has it), else `<repo>/data/mnist`."""
    shared = data_dir("mnist")
    return shared if shared.is_dir() else REPO_ROOT / "data" / "mnist"


@dataclass(frozen=True)
class MnistArrays:
    """uint8 images (N, 28, 28) and int64 labels (N,) for one split, plus the files they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    files: dict[str, str]  # file name -> sha256


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_idx(path: Path) -> tuple[np.ndarray, str]:
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    zeros, dtype_code, ndim = data[0:2], data[2], data[3]
    if zeros != b"\x00\x00" or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {array.size} bytes")
    return array.reshape(shape), digest


def _download(directory: Path) -> None:
    """Online fallback: torchvision's MNIST download into `directory/MNIST/raw`, then use those files."""
    from torchvision.datasets import MNIST

    log.warning("MNIST idx files not found in %s; downloading with torchvision", directory)
    try:
        MNIST(root=str(directory), train=True, download=True)
        MNIST(root=str(directory), train=False, download=True)
    except Exception as exc:  # torchvision raises a bare RuntimeError/URLError when offline
        raise FileNotFoundError(
            f"MNIST idx files ({', '.join(FILES.values())}[.gz]) are not in {directory} and the download "
            f"failed ({exc}). Put the four files there or pass --data-dir."
        ) from exc


def load_mnist(directory: Path, *, download: bool = True) -> dict[str, MnistArrays]:
    """Return {"train": ..., "test": ...} from the idx files in `directory` (or its MNIST/raw)."""
    candidates = [directory, directory / "MNIST" / "raw"]
    found = next((d for d in candidates if all(_find(d, stem) for stem in FILES.values())), None)
    if found is None:
        if not download:
            raise FileNotFoundError(f"MNIST idx files not found in {directory}")
        _download(directory)
        found = directory / "MNIST" / "raw"
    arrays, files = {}, {}
    for key, stem in FILES.items():
        path = _find(found, stem)
        assert path is not None
        arrays[key], files[path.name] = _read_idx(path)
    return {
        split: MnistArrays(
            images=torch.from_numpy(arrays[f"{split}_images"].copy()),
            labels=torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64)),
            files={n: h for n, h in files.items() if n.startswith("train" if split == "train" else "t10k")},
        )
        for split in ("train", "test")
    }


def split_train_dev(
    train: MnistArrays, dev_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random split of training indices into (train, dev)."""
    order = torch.randperm(len(train.labels), generator=generator)
    n_dev = int(round(len(order) * dev_fraction))
    return order[n_dev:], order[:n_dev]
