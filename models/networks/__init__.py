"""Network definitions, looked up by architecture name.

The registry stores an architecture *name* and its constructor arguments in each
manifest and rebuilds the module from this table, so loading never unpickles code.
"""

from collections.abc import Callable

from torch import nn

from models.networks.char_rnn import CharRNN
from models.networks.cifar import AirbenchNet, AlexNetSmall, CifarLeNet, KerasCNN
from models.networks.efficientnet_lite import EfficientNetLite
from models.networks.lenet import CNN2, LeNet5, LeNet5Tanh, Seed000
from models.networks.small_resnet import SmallResNet
from models.networks.torchvision_zoo import build_torchvision

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "lenet5-tanh": LeNet5Tanh,
    "seed000": Seed000,
    "cnn2": CNN2,
    "char-rnn": CharRNN,
    "efficientnet_lite": EfficientNetLite,  # args: variant ("lite0".."lite4"), num_classes
    "torchvision": build_torchvision,  # args: model (any torchvision classifier), kwargs
    "small-resnet": SmallResNet,  # args: num_classes, width, depth, stages (RGB images of any size, e.g. 32x32)
    "airbench": AirbenchNet,  # args: num_classes, widths, scale (RGB, any size the pooling can take)
    "cifar-lenet": CifarLeNet,  # args: num_classes, width, batchnorm (3x32x32)
    "keras-cnn": KerasCNN,  # args: num_classes, batchnorm (3x32x32)
    "alexnet-small": AlexNetSmall,  # args: num_classes, batchnorm (3x32x32)
}

# The 1x28x28 digit classifiers (what `training.lenet --arch` offers).
DIGIT_ARCHITECTURES: tuple[str, ...] = ("cnn2", "lenet5", "lenet5-tanh", "seed000")


class UnknownArchitectureError(ValueError):
    """Raised for an architecture name that is not in `ARCHITECTURES`."""


def build_network(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the architecture `name` with constructor `kwargs`."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise UnknownArchitectureError(f"unknown architecture {name!r}; valid: {valid}") from None
    return factory(**kwargs)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters, trainable or frozen: the size of the network that runs."""
    return sum(p.numel() for p in module.parameters())
