"""Presets: one builder per named model, the single place where the parts are assembled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .anchors import AnchorConfig, LevelAnchors
from .backbones import TinyFPN
from .model import ProposalModel
from .rpn import ProposalConfig, RegionProposalNetwork, RPNConfig


@dataclass(frozen=True)
class ModelConfig:
    """A preset's full configuration; saved with every checkpoint."""

    preset: str
    rpn: RPNConfig = field(default_factory=RPNConfig)
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)


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
    return ModelConfig(preset="tiny", rpn=rpn)


def build_tiny(config: ModelConfig) -> ProposalModel:
    backbone = TinyFPN()
    rpn = RegionProposalNetwork(in_channels=backbone.out_channels, config=config.rpn)
    return ProposalModel(
        backbone=backbone, rpn=rpn, pixel_mean=config.pixel_mean, pixel_std=config.pixel_std
    )


# name -> (default config, builder)
PRESETS: dict[str, tuple[Callable[[], ModelConfig], Callable[[ModelConfig], ProposalModel]]] = {
    "tiny": (tiny_config, build_tiny),
}


def preset_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return PRESETS[name][0]()


def build_model(config: ModelConfig) -> ProposalModel:
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; available: {sorted(PRESETS)}")
    return PRESETS[config.preset][1](config)
