"""Train a CIFAR-10 classifier from scratch and register it: `python -m training.cifar10 [--recipe R] [--promote]`.

This is `python -m training.images` (same options, same code) with `../shared/data/cifar10` (train/ and
test/; validation drawn from train) as its data, `cifar10` as its task, and these recipes:
- `airbench` (default): the network and data handling of Keller Jordan's airbench94 made for this CPU: a
  frozen whitening layer set from the training images, three conv groups (48, 192, 192 channels: 3/4 of
  airbench's, so the weights stay under 5 MB), GELU, SGD with Nesterov momentum on a one-cycle schedule,
  label smoothing 0.2, random crops (2 px) and flips, bf16 autocast forward passes (AMX on this CPU), and
  flip test-time augmentation, scored and served;
- the student report's three networks, each with the same data handling: `lenet` (LeNet-5 on colour,
  reported 70.78%; channels doubled), `keras-cnn` (the Keras cifar10_cnn example, reported 82.37%) and
  `alexnet` (an AlexNet-style network, reported 60.76%), with batch norm after each conv (`--no-batchnorm`:
  without);
- `resnet`: `training.images`' own scratch recipe (a small ResNet).
Figures and wall times: `python -m bench.cifar10` writes bench/results/cifar10.md.
"""

from __future__ import annotations

import argparse
import sys

from models.paths import data_dir
from training.images import SCRATCH, Defaults, Recipe, build_parser as images_parser
from training.images import main as images_main

TASK = "cifar10"
_FIXED_32 = dict(SCRATCH, width=1, epochs=30, lr=0.05, batch_size=128, label_smoothing=0.1, precision="bf16")
RECIPES: dict[str, Recipe] = {
    "airbench": Recipe("scratch", dict(SCRATCH, arch="airbench", width=48, epochs=24, batch_size=512, lr=0.4,
                                       momentum=0.9, weight_decay=5e-4, label_smoothing=0.2, crop_padding=2,
                                       tta="hflip", precision="bf16")),
    "lenet": Recipe("scratch", dict(_FIXED_32, arch="cifar-lenet", width=2, precision="fp32")),
    "keras-cnn": Recipe("scratch", dict(_FIXED_32, arch="keras-cnn")),
    "alexnet": Recipe("scratch", dict(_FIXED_32, arch="alexnet-small", epochs=4)),
    "resnet": Recipe("scratch", SCRATCH),
}
DEFAULTS = Defaults(prog="python -m training.cifar10", description=__doc__ or "", task=TASK, title="CIFAR-10",
                    data_dir=data_dir("cifar10"), dataset="cifar10", recipes=RECIPES, recipe="airbench",
                    device="auto")


def build_parser() -> argparse.ArgumentParser:
    """`training.images`' parser with the CIFAR-10 defaults."""
    return images_parser(DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    """The command line; the exit status is `training.cli.run_cli`'s (0, or 2 with the error on stderr)."""
    return images_main(argv, DEFAULTS)


if __name__ == "__main__":
    sys.exit(main())
