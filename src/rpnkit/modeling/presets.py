"""Presets: named model configurations, and the one builder that assembles any of them.

The registry is a plain dict of functions returning a ``ModelConfig``; ``build_model`` is the
single place where a backbone and an RPN meet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .anchors import AnchorConfig, LevelAnchors
from .backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, build_backbone
from .backbones.efficientnet_lite import EFFNET_PIXEL_MEAN, EFFNET_PIXEL_STD
from .proposal_model import ProposalModel
from .rpn import ProposalConfig, RegionProposalNetwork, RPNConfig


@dataclass(frozen=True)
class ModelConfig:
    """A model's full configuration; printable and saved with every checkpoint."""

    preset: str
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD


def tiny_config() -> ModelConfig:
    """The CPU demo's model: TinyFPN (strides 8/16/32), 6 anchors per position."""
    anchors = AnchorConfig(
        levels=(
            LevelAnchors(stride=8, sizes=(16.0, 28.0)),
            LevelAnchors(stride=16, sizes=(48.0, 80.0)),
            LevelAnchors(stride=32, sizes=(128.0, 208.0)),
        )
    )
    rpn = RPNConfig(
        anchors=anchors,
        train_proposals=ProposalConfig(pre_nms_top_n=1000, post_nms_top_n=1000),
        test_proposals=ProposalConfig(pre_nms_top_n=1000, post_nms_top_n=300),
    )
    return ModelConfig(preset="tiny", backbone=BackboneConfig(name="tiny"), rpn=rpn)


def vgg16_c5_config() -> ModelConfig:
    """The paper's RPN: VGG-16 conv5_3 (stride 16), 9 anchors, 2-class softmax, border 0,
    12000/2000 and 6000/300 proposals. conv1-conv2 frozen, as in the paper."""
    return ModelConfig(
        preset="vgg16-c5",
        backbone=BackboneConfig(name="vgg16", layout="c5", freeze_at=2),
        rpn=RPNConfig.paper(),
    )


def _fpn_rpn() -> RPNConfig:
    return RPNConfig(anchors=AnchorConfig.pyramid())


def r50_fpn_config() -> ModelConfig:
    """ResNet-50 + FPN (P2-P6), one size per level x 3 ratios; frozen BN and stem + layer1."""
    return ModelConfig(
        preset="r50-fpn",
        backbone=BackboneConfig(name="resnet50", layout="fpn", freeze_at=2, freeze_bn=True),
        rpn=_fpn_rpn(),
    )


def r18_fpn_config() -> ModelConfig:
    return ModelConfig(
        preset="r18-fpn",
        backbone=BackboneConfig(name="resnet18", layout="fpn", freeze_at=2, freeze_bn=True),
        rpn=_fpn_rpn(),
    )


def _c4_rpn() -> RPNConfig:
    return RPNConfig(anchors=AnchorConfig.single_level(stride=16, sizes=(32, 64, 128, 256, 512)))


def r50_c4_config() -> ModelConfig:
    """ResNet-50 to layer3 (stride 16), 15 anchors (5 sizes x 3 ratios)."""
    return ModelConfig(
        preset="r50-c4",
        backbone=BackboneConfig(name="resnet50", layout="c4", freeze_at=2, freeze_bn=True),
        rpn=_c4_rpn(),
    )


def r18_c4_config() -> ModelConfig:
    return ModelConfig(
        preset="r18-c4",
        backbone=BackboneConfig(name="resnet18", layout="c4", freeze_at=2, freeze_bn=True),
        rpn=_c4_rpn(),
    )


def effnet_lite0_fpn_config() -> ModelConfig:
    """The pretrained default: EfficientNet-Lite0 with its packaged ImageNet weights + FPN
    (P2-P6, 256 channels); frozen BN, stem and the stride-2 stage frozen."""
    return ModelConfig(
        preset="effnet-lite0-fpn",
        backbone=BackboneConfig(
            name="efficientnet_lite0", layout="fpn", weights="imagenet", freeze_at=2, freeze_bn=True
        ),
        rpn=_fpn_rpn(),
        pixel_mean=EFFNET_PIXEL_MEAN,
        pixel_std=EFFNET_PIXEL_STD,
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": tiny_config,
    "vgg16-c5": vgg16_c5_config,
    "r18-c4": r18_c4_config,
    "r50-c4": r50_c4_config,
    "r18-fpn": r18_fpn_config,
    "r50-fpn": r50_fpn_config,
    "effnet-lite0-fpn": effnet_lite0_fpn_config,
}


def preset_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return PRESETS[name]()


def build_model(config: ModelConfig) -> ProposalModel:
    """Backbone + RPN + pixel normalisation, from a config."""
    backbone = build_backbone(config.backbone)
    rpn = RegionProposalNetwork(in_channels=backbone.out_channels, config=config.rpn)
    return ProposalModel(
        backbone=backbone, rpn=rpn, pixel_mean=config.pixel_mean, pixel_std=config.pixel_std
    )
