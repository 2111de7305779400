"""Faster R-CNN: a backbone, rpnkit's RPN and the Fast R-CNN second stage, trained jointly
(the four losses summed: the paper's approximate joint training)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .presets import ModelConfig, build_model, preset_config
from .proposal_model import normalize
from .roi_heads import Detections, RoIHeadConfig, RoIHeads
from .rpn import Proposals
from .structures import GroundTruth


@dataclass(frozen=True)
class DetectorConfig:
    """A first stage (any proposal preset) and a second stage. ``pooled_levels``: how many of
    the backbone's levels the RoI pooler uses (FPN: P2-P5, the first four; single level: 1)."""

    model: ModelConfig = field(default_factory=lambda: preset_config("effnet-lite0-fpn"))
    roi: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    pooled_levels: int = 4


@dataclass
class DetectorOutput:
    proposals: Proposals
    detections: Detections | None
    losses: dict[str, Tensor]


class FasterRCNN(nn.Module):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        first = build_model(config.model)
        self.config = config
        self.backbone = first.backbone
        self.rpn = first.rpn
        self.register_buffer("pixel_mean", first.pixel_mean.clone(), False)
        self.register_buffer("pixel_std", first.pixel_std.clone(), False)
        levels = min(config.pooled_levels, len(self.backbone.strides))
        self.pooled_levels = levels
        self.roi_heads = RoIHeads(
            in_channels=self.backbone.out_channels,
            strides=self.backbone.strides[:levels],
            config=config.roi,
        )

    def forward(
        self,
        images: Tensor,
        image_sizes: Tensor,
        targets: GroundTruth | None = None,
        *,
        image_scales: Tensor | None = None,
        proposals: tuple[Tensor, Tensor] | None = None,
    ) -> DetectorOutput:
        """(B, 3, H, W) RGB in [0, 1], (B, 2) sizes -> proposals, and detections (inference)
        or the RPN and second-stage losses (training, with ``targets``).

        ``proposals``: precomputed (B, K, 4) boxes and (B, K) validity (the alternating
        schedule's steps 2 and 4); the RPN is then not run and gives no losses."""
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(
                f"images must be a non-empty (B, 3, H, W) batch, got {tuple(images.shape)}"
            )
        features = self.backbone(normalize(images, image_sizes, self.pixel_mean, self.pixel_std))
        training = targets is not None and self.training
        if proposals is None:
            rpn_out = self.rpn(features, image_sizes, targets, image_scales=image_scales)
            found, rpn_losses = rpn_out.proposals, rpn_out.losses  # no gradient through boxes
        else:
            boxes, valid = proposals
            scores = valid.to(boxes.dtype)
            levels = torch.zeros(valid.shape, dtype=torch.int64, device=valid.device)
            found = Proposals(boxes, scores, levels, valid.sum(dim=1))
            rpn_losses = {}
        if not images.is_cuda and found.boxes.shape[1] > 1:
            # on the CPU a sync is free and the second stage's work follows the RoI count:
            # drop the padding columns that no image uses
            k = max(1, int(found.num.max()))
            found = Proposals(
                found.boxes[:, :k], found.scores[:, :k], found.levels[:, :k], found.num
            )
        detections, roi_losses, _ = self.roi_heads(
            features[: self.pooled_levels],
            found.boxes,
            found.valid,
            image_sizes,
            targets if training else None,
        )
        return DetectorOutput(found, detections, {**rpn_losses, **roi_losses})


def build_detector(config: DetectorConfig) -> FasterRCNN:
    return FasterRCNN(config)
