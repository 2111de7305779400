"""Presets: named model configurations, and the builders that assemble them.

The registry is a plain dict of functions returning a ``ModelConfig``. ``build_model`` is the
single place where a backbone and an RPN meet; ``build_detector`` adds the second stage, whose
config ``detector_config`` derives from a preset and the number of classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import DEFAULT_PRESET
from .anchors import AnchorConfig, LevelAnchors
from .backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, build_backbone
from .backbones.efficientnet_lite import EFFNET_PIXEL_MEAN, EFFNET_PIXEL_STD
from .cascade_rpn import CascadeConfig, CascadeRPN, cascade_rpn_config
from .detector import FasterRCNN
from .proposal_model import ProposalModel
from .roi_heads import RoIHeadConfig, RoIHeads
from .rpn import ProposalConfig, RegionProposalNetwork, RPNConfig


@dataclass(frozen=True)
class ModelConfig:
    """A model's full configuration; printable and saved with every checkpoint.

    ``cascade``: set, the RPN is a Cascade RPN (``cascade_rpn.py``), whose final stage ``rpn``
    describes and whose first stage ``cascade`` adds."""

    preset: str
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    cascade: CascadeConfig | None = None


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


def with_objectness_mode(config: ModelConfig, mode: str) -> ModelConfig:
    """The config with its RPN's objectness learnt as ``mode``: ``"classification"`` or OLN's
    ``"localization"`` (any preset with a sigmoid head; the paper's softmax head has none)."""
    return dataclasses.replace(config, rpn=dataclasses.replace(config.rpn, objectness_mode=mode))


def effnet_lite0_fpn_oln_config() -> ModelConfig:
    """``effnet-lite0-fpn`` with OLN's localization-quality objectness: proposals for objects
    of classes never seen in training (the anchors and box regression are unchanged)."""
    config = with_objectness_mode(effnet_lite0_fpn_config(), "localization")
    return dataclasses.replace(config, preset="effnet-lite0-fpn-oln")


def oln_first_stage(config: ModelConfig, *, preset: str, proposals: int | None) -> ModelConfig:
    """``config``'s RPN in localization mode as the first stage of OLN's full model: no NMS
    among the proposals (OLN's ``nms_thr=1.0``: the box head's NMS comes after its own
    scoring), ``proposals`` per image in training and at test (None: the config's)."""
    config = with_objectness_mode(config, "localization")
    rpn = config.rpn
    settings = {"nms_threshold": 1.0}
    if proposals is not None:
        settings |= {"pre_nms_top_n": proposals, "post_nms_top_n": proposals}
    rpn = dataclasses.replace(
        rpn,
        train_proposals=dataclasses.replace(rpn.train_proposals, **settings),
        test_proposals=dataclasses.replace(rpn.test_proposals, **settings),
    )
    return dataclasses.replace(config, preset=preset, rpn=rpn)


def effnet_lite0_fpn_oln_rcnn_config() -> ModelConfig:
    """OLN's full model on ``effnet-lite0-fpn``: the localization RPN (2,000 proposals per
    image, no NMS) and, as a Faster R-CNN (``detector_config``), OLN's class-agnostic box
    head that regresses each RoI's IoU; final boxes scored sqrt(RPN score x IoU)."""
    return oln_first_stage(
        effnet_lite0_fpn_config(), preset="effnet-lite0-fpn-oln-rcnn", proposals=2000
    )


def tiny_oln_rcnn_config() -> ModelConfig:
    """``effnet-lite0-fpn-oln-rcnn``'s design on the ``tiny`` model, for tests."""
    return oln_first_stage(tiny_config(), preset="tiny-oln-rcnn", proposals=None)


# the presets whose Faster R-CNN has OLN's localization box head (RoIHeadConfig.localization)
OLN_RCNN_PRESETS = ("effnet-lite0-fpn-oln-rcnn", "tiny-oln-rcnn")


def effnet_lite0_fpn_cascade_config() -> ModelConfig:
    """``effnet-lite0-fpn`` with a Cascade RPN: one 8x-stride square anchor per position on
    P2-P6, two stages of adaptive convolution (mmdetection's Cascade RPN settings)."""
    base = effnet_lite0_fpn_config()
    rpn = cascade_rpn_config(base.rpn.anchors.strides)
    return dataclasses.replace(
        base, preset="effnet-lite0-fpn-cascade", rpn=rpn, cascade=CascadeConfig()
    )


def tiny_cascade_config() -> ModelConfig:
    """``tiny`` (TinyFPN, strides 8/16/32) with a Cascade RPN, for tests and the CPU."""
    base = tiny_config()
    rpn = cascade_rpn_config(
        base.rpn.anchors.strides,
        train_proposals=ProposalConfig(pre_nms_top_n=1000, post_nms_top_n=1000, nms_threshold=0.8),
        test_proposals=ProposalConfig(pre_nms_top_n=1000, post_nms_top_n=300, nms_threshold=0.8),
    )
    return dataclasses.replace(base, preset="tiny-cascade", rpn=rpn, cascade=CascadeConfig())


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": tiny_config,
    "vgg16-c5": vgg16_c5_config,
    "r18-c4": r18_c4_config,
    "r50-c4": r50_c4_config,
    "r18-fpn": r18_fpn_config,
    "r50-fpn": r50_fpn_config,
    "effnet-lite0-fpn": effnet_lite0_fpn_config,
    "effnet-lite0-fpn-oln": effnet_lite0_fpn_oln_config,
    "effnet-lite0-fpn-cascade": effnet_lite0_fpn_cascade_config,
    "tiny-cascade": tiny_cascade_config,
    "effnet-lite0-fpn-oln-rcnn": effnet_lite0_fpn_oln_rcnn_config,
    "tiny-oln-rcnn": tiny_oln_rcnn_config,
}


def preset_config(name: str) -> ModelConfig:
    """The ``ModelConfig`` of preset ``name`` (``PRESETS``; docs/cli.md's table), a fresh one
    each call: change it with ``dataclasses.replace``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return PRESETS[name]()


@dataclass(frozen=True)
class DetectorConfig:
    """A first stage (any proposal preset) and a second stage. ``pooled_levels``: how many of
    the backbone's levels the RoI pooler uses (FPN: P2-P5, the first four; single level: 1)."""

    model: ModelConfig = field(default_factory=lambda: preset_config(DEFAULT_PRESET))
    roi: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    pooled_levels: int = 4


def detector_config(model: ModelConfig, num_classes: int) -> DetectorConfig:
    """A Faster R-CNN on a preset's backbone and RPN for ``num_classes`` object classes
    (background excluded): the paper's second stage (VGG fc6/fc7, 128 RoIs) on the paper's
    preset, OLN's class-agnostic localization head on ``OLN_RCNN_PRESETS`` (whatever
    ``num_classes``), the modern light one elsewhere; RoIs pooled from P2-P5 on a pyramid."""
    classes = num_classes + 1  # and background
    if model.preset in OLN_RCNN_PRESETS:  # class-agnostic: the classes are not learnt
        width = 256 if model.preset.startswith("tiny") else 1024
        roi = RoIHeadConfig.localization(representation_size=width)
    elif model.preset == "vgg16-c5":
        roi = RoIHeadConfig.paper(num_classes=classes)
    else:
        roi = RoIHeadConfig(num_classes=classes)
    levels = len(model.rpn.anchors.levels)
    return DetectorConfig(model=model, roi=roi, pooled_levels=4 if levels >= 5 else levels)


def without_pretrained_weights(config: ModelConfig) -> ModelConfig:
    """The config with no backbone weights to load: for models whose weights come from a
    checkpoint, and for pictures of anchors, which need none."""
    return with_backbone_weights(config, None)


def with_backbone_weights(config: ModelConfig, weights: str | None) -> ModelConfig:
    """The config with another backbone weights file (or ``"imagenet"``)."""
    return dataclasses.replace(
        config, backbone=dataclasses.replace(config.backbone, weights=weights)
    )


def build_model(config: ModelConfig) -> ProposalModel:
    """Backbone + RPN (a Cascade RPN when ``config.cascade`` is set) + pixel normalisation,
    from a config."""
    backbone = build_backbone(config.backbone)
    if config.cascade is not None:
        rpn = CascadeRPN(
            in_channels=backbone.out_channels, config=config.rpn, cascade=config.cascade
        )
    else:
        rpn = RegionProposalNetwork(in_channels=backbone.out_channels, config=config.rpn)
    return ProposalModel(
        backbone=backbone, rpn=rpn, pixel_mean=config.pixel_mean, pixel_std=config.pixel_std
    )


def build_detector(config: DetectorConfig) -> FasterRCNN:
    """The first stage of ``config.model`` and a second stage on its first
    ``config.pooled_levels`` feature maps."""
    first_stage = build_model(config.model)
    strides = first_stage.backbone.strides
    levels = min(config.pooled_levels, len(strides))
    roi_heads = RoIHeads(
        in_channels=first_stage.backbone.out_channels, strides=strides[:levels], config=config.roi
    )
    return FasterRCNN(first_stage=first_stage, roi_heads=roi_heads, pooled_levels=levels)
