"""Faster R-CNN: a first stage (``ProposalModel``: backbone and RPN) and the Fast R-CNN second
stage on its features, trained jointly (the four losses summed: the paper's approximate joint
training) or on given proposals (the alternating schedule's detector steps)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .freezing import Freezable
from .proposal_model import ProposalModel
from .roi_heads import Detections, RoIHeadConfig, RoIHeads
from .rpn import ProposalConfig, Proposals, RegionProposalNetwork
from .structures import GroundTruth


@dataclass
class DetectorOutput:
    proposals: Proposals
    detections: Detections | None
    losses: dict[str, Tensor]


class FasterRCNN(Freezable):
    """``first_stage`` proposes; ``roi_heads`` pools the first ``pooled_levels`` of its feature
    maps (FPN: P2-P5) for every proposal, classifies and refines. Built by
    ``presets.build_detector``; the first stage is a module of its own, usable alone."""

    def __init__(
        self, *, first_stage: ProposalModel, roi_heads: RoIHeads, pooled_levels: int
    ) -> None:
        super().__init__()
        strides = tuple(first_stage.backbone.strides)
        if tuple(roi_heads.pooler.strides) != strides[:pooled_levels]:
            raise ValueError(
                f"the RoI heads pool strides {tuple(roi_heads.pooler.strides)} but the first "
                f"{pooled_levels} backbone level(s) have strides {strides[:pooled_levels]}"
            )
        self.first_stage = first_stage
        self.roi_heads = roi_heads
        self.pooled_levels = pooled_levels

    @property
    def backbone(self) -> nn.Module:
        return self.first_stage.backbone

    @property
    def rpn(self) -> RegionProposalNetwork:
        return self.first_stage.rpn

    def forward(
        self,
        images: Tensor,
        image_sizes: Tensor,
        targets: GroundTruth | None = None,
        *,
        image_scales: Tensor | None = None,
        proposals: tuple[Tensor, Tensor] | None = None,
        proposal_config: ProposalConfig | None = None,
        head_config: RoIHeadConfig | None = None,
    ) -> DetectorOutput:
        """(B, 3, H, W) RGB in [0, 1], (B, 2) sizes -> proposals, and detections (inference)
        or the RPN and second-stage losses (training, with ``targets``).

        ``proposals``: precomputed (B, K, 4) boxes and (B, K) validity (the alternating
        schedule's steps 2 and 4); the RPN is then not run and gives no losses.
        ``proposal_config``, ``head_config``: this call's proposal setting and box head
        settings in place of the model's own (a call's detection limit: the model is left as
        it is, for the calls beside it)."""
        features = self.first_stage.features(images, image_sizes)
        training = targets is not None and self.training
        if proposals is None:
            rpn_out = self.rpn(
                features,
                image_sizes,
                targets,
                image_scales=image_scales,
                proposal_config=proposal_config,
            )
            found, rpn_losses = rpn_out.proposals, rpn_out.losses  # no gradient through boxes
        else:
            found, rpn_losses = given_proposals(*proposals), {}
        if not images.is_cuda and found.boxes.shape[1] > 1 and not torch.compiler.is_compiling():
            found = trim_padding(found)
        detections, roi_losses, _ = self.roi_heads(
            features[: self.pooled_levels],
            found.boxes,
            found.valid,
            image_sizes,
            targets if training else None,
            proposal_scores=found.scores,  # OLN's box score multiplies in the RPN's
            config=head_config,
        )
        return DetectorOutput(found, detections, {**rpn_losses, **roi_losses})


def given_proposals(boxes: Tensor, valid: Tensor) -> Proposals:
    """(B, K, 4) boxes and (B, K) validity as Proposals (score 1, level 0)."""
    levels = torch.zeros(valid.shape, dtype=torch.int64, device=valid.device)
    return Proposals(boxes, valid.to(boxes.dtype), levels, valid.sum(dim=1))


def trim_padding(found: Proposals) -> Proposals:
    """Drop the padding columns that no image uses. For the CPU only: it reads the largest
    count (a sync, free there), and the second stage's work follows the RoI count."""
    k = max(1, int(found.num.max()))
    return Proposals(found.boxes[:, :k], found.scores[:, :k], found.levels[:, :k], found.num)
