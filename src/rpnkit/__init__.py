"""rpnkit: Region Proposal Networks and the Faster R-CNN detector built on them.

    import rpnkit
    run = rpnkit.fit("path/to/dataset", kind="faster-rcnn", out="runs/x")  # train
    model = rpnkit.load("runs/x/checkpoint.safetensors")                   # infer
    detections = model.detect(["a.jpg", "b.jpg"])

The package is laid out by role (docs/design.md): ``modeling`` (the networks), ``data``,
``evaluation`` (the metrics), ``engine`` (training, checkpoints, the inference runtime),
``viz`` (pictures and the report) and ``cli``.
"""

from .data import DataConfig
from .engine.checkpoint import ModelSpec
from .engine.fit import FitResult, fit
from .engine.label_files import write_labels
from .engine.results import DetectionResult, ProposalResult, to_coco_results
from .engine.runtime import Predictor, load
from .engine.stored_results import evaluate_stored_detections, evaluate_stored_proposals
from .engine.trainer import TrainConfig
from .engine.writing import write_coco_results
from .modeling.anchors import AnchorConfig, AnchorGenerator, LevelAnchors, visible_anchors
from .modeling.boxes import BoxCoder, box_iou
from .modeling.cascade_rpn import CascadeConfig, CascadeRPN
from .modeling.detector import FasterRCNN
from .modeling.matching import BalancedSampler, Matcher
from .modeling.presets import (
    PRESETS,
    DetectorConfig,
    ModelConfig,
    build_detector,
    build_model,
    detector_config,
    preset_config,
)
from .modeling.proposal_model import ProposalModel
from .modeling.roi_heads import RoIHeadConfig
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
    "PRESETS",
    "AnchorConfig",
    "AnchorGenerator",
    "BalancedSampler",
    "BoxCoder",
    "CascadeConfig",
    "CascadeRPN",
    "DataConfig",
    "DetectionResult",
    "DetectorConfig",
    "FasterRCNN",
    "FitResult",
    "GroundTruth",
    "LevelAnchors",
    "Matcher",
    "ModelConfig",
    "ModelSpec",
    "Predictor",
    "ProposalConfig",
    "ProposalModel",
    "ProposalResult",
    "Proposals",
    "RPNConfig",
    "RPNHead",
    "RegionProposalNetwork",
    "RoIHeadConfig",
    "TrainConfig",
    "box_iou",
    "build_detector",
    "build_model",
    "detector_config",
    "evaluate_stored_detections",
    "evaluate_stored_proposals",
    "fit",
    "load",
    "preset_config",
    "select_proposals",
    "to_coco_results",
    "visible_anchors",
    "write_coco_results",
    "write_labels",
]
