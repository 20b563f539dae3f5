"""A small ResNet for small RGB images (CIFAR-like 32x32, any size the pooling can take), returning logits.

Stem conv 3x3 (`width` channels) + batch norm + ReLU, then `stages` stages of `depth` basic residual
blocks each (two 3x3 convs with batch norm; a 1x1 conv + batch norm shortcut where the shape changes);
stage s has `width * 2**s` channels and every stage after the first halves the resolution. Global average
pooling and one linear layer make the logits. Each block lists its conv + batch-norm pairs
(`conv_bn_pairs`) so `models.optimize.fold_batchnorm` folds all of them for serving.
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """conv 3x3 (stride) - BN - ReLU - conv 3x3 - BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """The (conv, batch norm) pairs outside a Sequential (the shortcut's pair is found as a Sequential)."""
        return [("conv1", "bn1"), ("conv2", "bn2")]

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet for small images; see the module docstring for the layout of `width`, `depth` and `stages`."""

    def __init__(self, num_classes: int = 10, width: int = 32, depth: int = 1, stages: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or width < 1 or depth < 1 or stages < 1:
            raise ValueError("num_classes, width, depth and stages must all be >= 1")
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        channels = width
        for stage in range(stages):
            out = width * 2**stage
            for index in range(depth):
                blocks.append(BasicBlock(channels, out, stride=2 if stage > 0 and index == 0 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for convs; each block's last batch norm starts at zero, so every residual
        block starts as the identity (trains faster and more stably from scratch)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))
