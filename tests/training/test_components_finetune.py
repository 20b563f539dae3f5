"""Stage 2 of the components recipe: which parameters learn, and batch-norm statistics that stay put."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from models.networks import build_network
from training.components_finetune import FrozenStatistics, parameter_groups, tail_parameters, unfreeze_tail


def test_units_of_efficientnet_lite_end_with_the_last_blocks_the_head_conv_and_the_classifier():
    groups = parameter_groups(build_network("efficientnet_lite", variant="lite0", num_classes=10))
    assert groups[-1] == ["_fc.weight", "_fc.bias"]
    assert groups[-2] == ["_conv_head.weight", "_bn1.weight", "_bn1.bias"], "a conv and its batch norm are one unit"
    assert all(name.startswith("_blocks.15.") for name in groups[-3])
    assert groups[0] == ["_conv_stem.weight", "_bn0.weight", "_bn0.bias"]


def test_units_of_a_torchvision_resnet_are_its_residual_blocks():
    groups = parameter_groups(torchvision.models.resnet18(weights=None, num_classes=10))
    assert [g[0].rsplit(".", 2)[0] for g in groups[-3:]] == ["layer4.0", "layer4.1", "fc"]


def test_unfreeze_tail_trains_the_head_and_the_chosen_blocks_only():
    network = build_network("efficientnet_lite", variant="lite0", num_classes=10)
    trainable = unfreeze_tail(network, "_fc", 2)
    assert {n.split(".")[0] for n in trainable} == {"_fc", "_conv_head", "_bn1", "_blocks"}
    assert {p.requires_grad for n, p in network.named_parameters() if n.startswith("_blocks.14.")} == {False}
    assert unfreeze_tail(network, "_fc", 0) == ["_fc.bias", "_fc.weight"]
    with pytest.raises(ValueError, match="valid: 0 to"):
        tail_parameters(network, "_fc", 1000)


def test_frozen_statistics_keeps_batch_norm_in_eval_mode_while_training():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    network(torch.zeros(1, 3, 8, 8))
    model = FrozenStatistics(network).train()
    assert not network[1].training
    before = network[1].running_mean.clone()
    loss = model(torch.randn(4, 3, 8, 8)).sum()
    loss.backward()
    assert torch.equal(network[1].running_mean, before)
