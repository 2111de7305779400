"""Backbones: modules mapping a (B, 3, H, W) normalised batch to a list of feature maps.

Every backbone exposes ``out_channels`` (channels of every returned level) and ``strides`` (one
per returned level), which the RPN's anchors must match.
"""

from .builders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneConfig,
    FPNBackbone,
    SingleLevel,
    build_backbone,
    freeze_batch_norm,
)
from .efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0
from .tiny import TinyFPN

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BackboneConfig",
    "EfficientNetLite0",
    "FPNBackbone",
    "SingleLevel",
    "TinyFPN",
    "build_backbone",
    "freeze_batch_norm",
    "load_efficientnet_lite0",
]
