"""The three CIFAR-10 networks of the student report, for 3x32x32 inputs, each returning logits.

- `CifarLeNet`: LeNet-5 on colour images (conv 6@5x5, pool, conv 16@5x5, pool, FC 120-84); `width`
  multiplies the channels.
- `KerasCNN`: the Keras `cifar10_cnn` example (conv 32-32, pool, dropout .25, conv 64-64, pool, dropout
  .25, FC 512, dropout .5), optionally with batch norm after each conv.
- `AlexNetSmall`: AlexNet's shape (5 convs, 3 max pools, 2 hidden FC layers with dropout) scaled to 32x32.

Batch norm follows each conv directly, so serving folds it into the conv (`conv_bn_pairs` is not needed:
`models.optimize.fold_batchnorm` finds Conv2d + BatchNorm2d pairs inside Sequentials).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv(in_channels: int, out_channels: int, kernel: int, *, batchnorm: bool, padding: int = 0) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


class CifarLeNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 1, batchnorm: bool = False) -> None:
        super().__init__()
        c1, c2 = 6 * width, 16 * width
        self.features = nn.Sequential(*_conv(3, c1, 5, batchnorm=batchnorm), nn.MaxPool2d(2),
                                      *_conv(c1, c2, 5, batchnorm=batchnorm), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 5 * 5, 120), nn.ReLU(inplace=True),
                                        nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class KerasCNN(nn.Module):
    def __init__(self, num_classes: int = 10, batchnorm: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv(3, 32, 3, batchnorm=batchnorm, padding=1), *_conv(32, 32, 3, batchnorm=batchnorm),
            nn.MaxPool2d(2), nn.Dropout(0.25),
            *_conv(32, 64, 3, batchnorm=batchnorm, padding=1), *_conv(64, 64, 3, batchnorm=batchnorm),
            nn.MaxPool2d(2), nn.Dropout(0.25))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 6 * 6, 512), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(512, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class AlexNetSmall(nn.Module):
    def __init__(self, num_classes: int = 10, batchnorm: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv(3, 48, 5, batchnorm=batchnorm, padding=2), nn.MaxPool2d(2),  # 16x16
            *_conv(48, 128, 5, batchnorm=batchnorm, padding=2), nn.MaxPool2d(2),  # 8x8
            *_conv(128, 192, 3, batchnorm=batchnorm, padding=1),
            *_conv(192, 192, 3, batchnorm=batchnorm, padding=1),
            *_conv(192, 128, 3, batchnorm=batchnorm, padding=1), nn.MaxPool2d(2))  # 4x4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(128 * 4 * 4, 512),
                                        nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(512, 512),
                                        nn.ReLU(inplace=True), nn.Linear(512, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class _ConvGroup(nn.Module):
    """conv 3x3 - max pool 2 - batch norm - GELU - conv 3x3 - batch norm - GELU (airbench's block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.second = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(out_channels))
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.second(x))


class AirbenchNet(nn.Module):
    """The network of Keller Jordan's airbench94 (2024): a fixed 2x2 whitening conv (set from the training
    images' patch covariance by `init_whitening`, then frozen but for its bias), three conv groups of
    `widths` channels, each halving the resolution, global max pooling and a bias-free linear layer whose
    logits are scaled by `scale` (airbench's 1/9 goes with its own learning-rate scaling; 1 with plain SGD)."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] | list[int] = (64, 256, 256),
                 scale: float = 1.0) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        channels = [24, *widths]
        self.groups = nn.Sequential(*(_ConvGroup(a, b) for a, b in zip(channels, channels[1:])))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(channels[-1], num_classes, bias=False)
        self.scale = scale

    @torch.no_grad()
    def init_whitening(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from N x 3 x H x W normalised training images: the eigenvectors of the
        covariance of their 2x2 patches, scaled by 1/sqrt(eigenvalue), each with its negative."""
        patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 3 * 2 * 2).double()
        patches = patches - patches.mean(0)
        covariance = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(covariance)
        filters = (vectors.T / torch.sqrt(values + eps)[:, None]).reshape(12, 3, 2, 2).flip(0)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.fc(self.pool(x).flatten(1)) * self.scale
