"""rpnkit: Region Proposal Networks and the Faster R-CNN detector built on them."""

from .modeling.anchors import AnchorConfig, AnchorGenerator, LevelAnchors, visible_anchors
from .modeling.boxes import BoxCoder, box_iou
from .modeling.matching import BalancedSampler, Matcher
from .modeling.rpn import (
    ProposalConfig,
    Proposals,
    RegionProposalNetwork,
    RPNConfig,
    RPNHead,
    select_proposals,
)
from .modeling.structures import GroundTruth

__version__ = "0.1.0"

__all__ = [
    "AnchorConfig",
    "AnchorGenerator",
    "BalancedSampler",
    "BoxCoder",
    "GroundTruth",
    "LevelAnchors",
    "Matcher",
    "ProposalConfig",
    "Proposals",
    "RPNConfig",
    "RPNHead",
    "RegionProposalNetwork",
    "box_iou",
    "select_proposals",
    "visible_anchors",
]
