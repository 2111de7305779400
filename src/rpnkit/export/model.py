"""``ExportableModel``: a loaded ``ProposalModel`` or ``FasterRCNN`` behind a forward that a
graph exporter can follow, with fixed-shape padded outputs.

Inputs:
    images       (B, 3, H, W) uint8 RGB, zero-padded at the bottom and right to a common
                 size, any H and W: the graph pads them on to multiples of 32
                 (``rpnkit.modeling.sizes.padded_size``), as rpnkit's batches are
    image_sizes  (B, 2) int64 true (height, width) of each image inside the padding

Outputs (padded: the first ``counts[i]`` rows of image i are valid, best first, the rest 0):
    an RPN         proposals (B, K, 4) float32 xyxy, scores (B, K) float32, counts (B,) int64
    a Faster R-CNN boxes (B, D, 4) float32 xyxy, scores (B, D) float32, labels (B, D) int64
                   (1..C-1), counts (B,) int64; OLN's class-agnostic detector
                   (``RoIHeadConfig.score_mode="localization"``) the same, every label 1 and
                   every score sqrt(RPN score x sigmoid(IoU logit)) (``postprocess_localization``)

K = min(post_nms_top_n, L * pre_nms_top_n) of the RPN's test setting and D =
``detections_per_image``: the same for every batch and image size. Boxes are in pixels of the
network input.

The graph bakes in the box head's score threshold, both NMS thresholds, D and K: the model's
own settings, or an export's (``export_configs``: ``rpnkit export --score``,
``--max-detections``, ``--top``), given to ``ExportableModel`` as a ``ProposalConfig`` and a
``RoIHeadConfig``, as ``FasterRCNN.forward(proposal_config=, head_config=)`` takes one call's
limits: the network itself is left as it is.

uint8 images, not float: that is how rpnkit's own batches travel (a quarter of float32's
bytes), normalisation then happens inside the graph, exactly as in ``ProposalModel``, and
nobody has to remember whether the graph wants [0, 1] or [0, 255].
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.device import fold_for_inference
from ..engine.runner import detection_limits, proposal_limit
from ..modeling.boxes import clip_boxes
from ..modeling.cascade_rpn import CascadeRPN, adaptive_offsets
from ..modeling.detector import FasterRCNN
from ..modeling.proposal_model import ProposalModel, normalize
from ..modeling.roi_heads import (
    Detections,
    RoIHeadConfig,
    postprocess_detections,
    postprocess_localization,
)
from ..modeling.rpn import ProposalConfig, Proposals, select_proposals
from ..modeling.sizes import SIZE_DIVISIBLE
from .graph_ops import (
    graph_anchor_grid,
    graph_anchors,
    graph_level_top_k,
    graph_nms,
    graph_pool_levels,
    level_sizes,
    static_same_padding,
)

INPUT_NAMES = ("images", "image_sizes")
RPN_OUTPUT_NAMES = ("proposals", "scores", "counts")
DETECTOR_OUTPUT_NAMES = ("boxes", "scores", "labels", "counts")


def export_configs(
    model: nn.Module,
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    top: int | None = None,
) -> dict[str, ProposalConfig | RoIHeadConfig | None]:
    """The ``proposal_config`` and ``head_config`` of an export of ``model`` (a ``FasterRCNN``
    or a ``ProposalModel``) at other settings than its own (None: its own), for
    ``ExportableModel``; the model is left as it is.

    A detector's ``score_threshold`` is its box head's, baked into the graph (it keeps scores
    above it); ``max_detections`` is D: more than its ``detections_per_image`` raises its NMS
    candidates and RPN proposals as ``rpnkit detect --max-detections`` does for one call
    (``runner.detection_limits``), fewer keeps the best D, the leading ones of its own output.
    An RPN's ``top`` is K, its proposals per image (more raises ``pre_nms_top_n`` with it, as
    ``rpnkit propose --top``: ``runner.proposal_limit``). A setting of the other kind is a
    one-line ValueError."""
    if isinstance(model, FasterRCNN):
        if top is not None:
            raise ValueError(
                "--top (top=) sets an RPN's proposals per image; a Faster R-CNN's graph keeps "
                "--max-detections (max_detections=) detections"
            )
        proposals, head = detection_limits(model, max_detections, score_threshold)
        head = head or model.roi_heads.config
        changes: dict = {}
        if score_threshold is not None:
            changes["score_threshold"] = score_threshold  # a higher one too: baked in
        if max_detections is not None and max_detections < head.detections_per_image:
            changes["detections_per_image"] = max_detections
        return {"proposal_config": proposals, "head_config": dataclasses.replace(head, **changes)}
    if score_threshold is not None or max_detections is not None:
        raise ValueError(
            "--score and --max-detections (score_threshold=, max_detections=) set a Faster "
            "R-CNN's detections; an RPN's graph keeps --top (top=) proposals"
        )
    if top is None:
        return {"proposal_config": None, "head_config": None}
    own = model.rpn.config.test_proposals
    raised = proposal_limit(own, top)
    fewer = dataclasses.replace(own, post_nms_top_n=top)  # the best ``top``: a prefix of its own
    return {"proposal_config": raised if top > own.post_nms_top_n else fewer, "head_config": None}


def pad_batch(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> zero-padded at the bottom and right to multiples of ``SIZE_DIVISIBLE``
    (a no-op on rpnkit's own batches): the graph takes images of any size."""
    h, w = images.shape[-2:]
    return F.pad(images, (0, -w % SIZE_DIVISIBLE, 0, -h % SIZE_DIVISIBLE))


class ExportableModel(nn.Module):
    """A copy of ``model`` (a ``ProposalModel`` or ``FasterRCNN``) with its batch norms folded
    (``fold_for_inference``), in eval mode, whose ``forward(images, image_sizes)`` returns a
    tuple of padded tensors (see the module docstring) through rpnkit's own modeling
    functions, with the graph twins of ``graph_ops`` in the steps whose sizes rpnkit reads on
    the host.

    ``fp16``: the convolutions and linear layers in float16 (weights and activations, for a
    GPU); the anchors, box decoding, NMS, RoI pooling and the outputs stay float32.
    ``proposal_config``, ``head_config``: the RPN's test setting and the box head's settings
    the graph bakes in (None: the model's own; ``export_configs`` makes them).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        fp16: bool = False,
        proposal_config: ProposalConfig | None = None,
        head_config: RoIHeadConfig | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, ProposalModel | FasterRCNN):
            raise ValueError(
                f"ExportableModel wraps a ProposalModel or a FasterRCNN, got {type(model).__name__}"
            )
        model = fold_for_inference(copy.deepcopy(model))  # the caller's model is left as it is
        self.model = model
        self.is_detector = isinstance(model, FasterRCNN)
        self.first_stage = model.first_stage if self.is_detector else model
        self.backbone = static_same_padding(self.first_stage.backbone)
        self.dtype = torch.float16 if fp16 else torch.float32
        if fp16:
            self.backbone.half()
            self.first_stage.rpn.head.half()
            if self.is_detector:
                model.roi_heads.box_head.half()
        self.first_stage.use_channels_last(False)  # an export-time layout is the runtime's call
        self.proposal_config = proposal_config or self.first_stage.rpn.config.test_proposals
        if head_config is not None and not self.is_detector:
            raise ValueError("an RPN has no box head: give head_config to a FasterRCNN's export")
        self.head_config = head_config or (model.roi_heads.config if self.is_detector else None)

    @property
    def output_names(self) -> tuple[str, ...]:
        return DETECTOR_OUTPUT_NAMES if self.is_detector else RPN_OUTPUT_NAMES

    @property
    def proposals_per_image(self) -> int:
        """K, the graph's proposal slots: min(post_nms_top_n, L * pre_nms_top_n), L levels."""
        levels = self.first_stage.rpn.anchor_generator.num_levels
        config = self.proposal_config
        return min(config.post_nms_top_n, levels * config.pre_nms_top_n)

    def settings(self) -> dict[str, float | int]:
        """What the graph bakes in: ``score_threshold`` and ``nms_threshold`` of its outputs
        (a detector's box head's, or an RPN's proposals'), ``detections_per_image`` (D, a
        detector's), ``proposals_per_image`` (K: an RPN's outputs, a detector's RoIs) and a
        detector's ``proposal_nms_threshold``."""
        proposals = self.proposal_config
        found = {"proposals_per_image": self.proposals_per_image}
        if not self.is_detector:
            return {
                "score_threshold": proposals.score_threshold,
                "nms_threshold": proposals.nms_threshold,
                **found,
            }
        head = self.head_config
        return {
            "score_threshold": head.score_threshold,
            "nms_threshold": head.nms_threshold,
            "detections_per_image": head.detections_per_image,
            **found,
            "proposal_nms_threshold": proposals.nms_threshold,
        }

    def forward(self, images: Tensor, image_sizes: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) uint8, (B, 2) int64 -> the padded outputs named ``output_names``."""
        features = self.features(images, image_sizes)
        proposals = self.propose(features, image_sizes)
        if not self.is_detector:
            return proposals.boxes, proposals.scores, proposals.num
        found = self.detect(features, proposals, image_sizes)
        return found.boxes, found.scores, found.labels, found.num

    def features(self, images: Tensor, image_sizes: Tensor) -> list[Tensor]:
        """``ProposalModel.features`` of the batch padded to multiples of 32 (``pad_batch``),
        the backbone in ``self.dtype``."""
        images = pad_batch(images)
        stage = self.first_stage
        x = normalize(images, image_sizes, stage.pixel_mean, stage.pixel_std)
        return self.backbone(x.to(self.dtype))

    def propose(self, features: list[Tensor], image_sizes: Tensor) -> Proposals:
        """``RegionProposalNetwork.forward`` at inference, anchors computed from the shapes."""
        rpn = self.first_stage.rpn
        if isinstance(rpn, CascadeRPN):
            return self.propose_cascade(features, image_sizes)
        pred_objectness, pred_deltas = rpn.head.flatten(*rpn.head(features))
        anchors = graph_anchors(rpn.anchor_generator, features)
        return self.select(pred_objectness, pred_deltas, anchors, features, image_sizes)

    def select(self, objectness, deltas, anchors, features, image_sizes) -> Proposals:
        """``select_proposals`` at the test setting with the graph's top-k and NMS, on (A, 4)
        anchors or (B, A, 4) per-image ones (a cascade's refined boxes)."""
        rpn = self.first_stage.rpn
        return select_proposals(
            objectness.float(),
            deltas.float(),
            anchors,
            level_sizes(rpn.anchor_generator, features),
            image_sizes,
            self.proposal_config,
            box_coder=rpn.box_coder,
            top_per_level=graph_level_top_k,
            nms=graph_nms,
        )

    def propose_cascade(self, features: list[Tensor], image_sizes: Tensor) -> Proposals:
        """``CascadeRPN.forward`` at inference: the anchors and the positions' grid computed
        from the shapes, stage 2's adaptive convolution as ``sampled_conv2d`` (grid_sample and
        a matmul; torchvision's ``deform_conv2d`` has no ONNX translation), offsets in float32."""
        rpn = self.first_stage.rpn
        anchors = graph_anchors(rpn.anchor_generator, features)  # (A, 4)
        grid = graph_anchor_grid(rpn.config.anchors, features)
        # 1. Stage 1: every anchor regressed, clipped to its image.
        bridged, stage1_deltas = rpn.head.stage1(features)
        stage1_boxes = rpn.stage1_box_coder.decode(stage1_deltas.float(), anchors)  # (B, A, 4)
        refined = clip_boxes(stage1_boxes, image_sizes)
        # 2. Stage 2 samples each position's own refined box.
        offsets = adaptive_offsets(refined, grid, offset=rpn.config.anchors.offset)
        pred_objectness, pred_deltas = rpn.head.stage2(bridged, offsets, mode="sampled")
        # 3. Proposals, with the refined boxes as each image's anchors.
        return self.select(pred_objectness, pred_deltas, refined, features, image_sizes)

    def detect(
        self, features: list[Tensor], proposals: Proposals, image_sizes: Tensor
    ) -> Detections:
        """``RoIHeads.forward`` at inference on every proposal slot (padding included: the
        graph cannot trim it, and ``valid`` masks it out of the detections). A
        localization-mode head scores its boxes with the proposals' RPN scores."""
        heads = self.model.roi_heads
        pooled_features = [f.float() for f in features[: self.model.pooled_levels]]
        pooled = heads.pooler(pooled_features, proposals.boxes, pool_levels=graph_pool_levels)
        scores, deltas = heads.box_head(pooled.to(self.dtype))
        if self.head_config.class_agnostic:
            return postprocess_localization(
                scores.float(),
                deltas.float(),
                proposals.boxes,
                proposals.valid,
                proposals.scores,
                image_sizes,
                self.head_config,
                heads.coder,
                nms=graph_nms,
            )
        return postprocess_detections(
            scores.float(),
            deltas.float(),
            proposals.boxes,
            proposals.valid,
            image_sizes,
            self.head_config,
            heads.coder,
            nms=graph_nms,
        )

    @torch.no_grad()
    def reference(self, images: Tensor, image_sizes: Tensor) -> tuple[Tensor, ...]:
        """The same outputs from rpnkit's own forward on the same (folded) weights: what the
        export is checked against (float32 only)."""
        if self.dtype != torch.float32:
            raise ValueError("reference() runs the float32 model: wrap it without fp16")
        images = pad_batch(images)  # as the graph does
        limits = {"proposal_config": self.proposal_config}
        if not self.is_detector:
            found = self.model(images, image_sizes, **limits).proposals
            return found.boxes, found.scores, found.num
        found = self.model(images, image_sizes, **limits, head_config=self.head_config).detections
        return found.boxes, found.scores, found.labels, found.num
