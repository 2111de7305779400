"""Helpers for comparing rpnkit with a reference (tests and benchmarks): proposal lists, and
torchvision's Faster R-CNN built with the same weights and settings as an rpnkit one."""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn


def _by_coordinates(boxes: Tensor, scores: Tensor) -> Tensor:
    """(N, 4), (N,) -> (N, 5) float64 rows [x1, y1, x2, y2, score] in coordinate order."""
    rows = torch.cat([boxes.double(), scores[:, None].double()], dim=1).cpu()
    for col in (3, 2, 1, 0):  # least significant key first; stable sorts keep the earlier keys
        rows = rows[rows[:, col].sort(stable=True).indices]
    return rows


def same_proposals(
    boxes: Tensor,
    scores: Tensor,
    ref_boxes: Tensor,
    ref_scores: Tensor,
    *,
    atol: float = 1e-4,
    score_atol: float = 0.0,
) -> bool:
    """True if two ranked proposal lists hold the same (box, score) pairs.

    Both lists must be sorted by decreasing score; equal pairs then mean the same proposals in
    the same order, except among equal scores (float32 sigmoids often tie, and sort orders of
    ties are not defined). Boxes are compared to ``atol`` pixels, scores to ``score_atol``
    (0: exactly; a CUDA sigmoid may differ from the CPU's by one ulp).
    """
    if boxes.shape != ref_boxes.shape:
        return False
    for s in (scores.float(), ref_scores.float()):
        if bool((s[1:] > s[:-1] + score_atol).any()):
            return False
    a, b = _by_coordinates(boxes, scores.float()), _by_coordinates(ref_boxes, ref_scores.float())
    return torch.allclose(a[:, :4], b[:, :4], atol=atol, rtol=0) and torch.allclose(
        a[:, 4], b[:, 4], atol=score_atol, rtol=0
    )


def detection_rows(boxes: Tensor, scores: Tensor, labels: Tensor) -> Tensor:
    """(N, 4), (N,), (N,) detections -> (N, 6) float64 rows [x1, y1, x2, y2, score, label] in
    coordinate order: two lists of the same detections give the same rows, whatever the order
    of their equal scores."""
    rows = torch.cat([boxes.double(), scores[:, None].double(), labels[:, None].double()], 1)
    rows = rows.cpu()
    for col in (5, 3, 2, 1, 0):  # least significant key first; stable sorts keep the rest
        rows = rows[rows[:, col].sort(stable=True).indices]
    return rows


@torch.no_grad()
def copy_rpn_head_to_torchvision(head, tv_head) -> None:
    """Load rpnkit's (shared-predictor) RPNHead weights into torchvision's RPNHead."""
    tv_head.conv[0][0].weight.copy_(head.conv.weight)
    tv_head.conv[0][0].bias.copy_(head.conv.bias)
    tv_head.cls_logits.weight.copy_(head.cls_logits[0].weight)
    tv_head.cls_logits.bias.copy_(head.cls_logits[0].bias)
    tv_head.bbox_pred.weight.copy_(head.bbox_pred[0].weight)
    tv_head.bbox_pred.bias.copy_(head.bbox_pred[0].bias)


class BackboneAdapter(nn.Module):
    """rpnkit's backbone (a list of maps) as torchvision wants it (an OrderedDict)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.out_channels = body.out_channels

    def forward(self, x):
        return OrderedDict((str(i), f) for i, f in enumerate(self.body(x)))


def torchvision_faster_rcnn(ours, *, min_size: int = 800, max_size: int = 1333):
    """torchvision's FasterRCNN equal to ``ours`` (an rpnkit FasterRCNN) in weights and
    settings, on a deep copy of its backbone. torchvision rounds its base anchors: give
    ``ours`` anchors with ``round_base=True`` for equal outputs."""
    from torchvision.models.detection import FasterRCNN as TVFasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.rpn import RPNHead as TVRPNHead
    from torchvision.ops import MultiScaleRoIAlign

    rpn_cfg, roi_cfg = ours.rpn.config, ours.roi_heads.config
    levels = rpn_cfg.anchors.levels
    names = [str(i) for i in range(ours.pooled_levels)]
    tv = TVFasterRCNN(
        BackboneAdapter(copy.deepcopy(ours.backbone)),
        box_head=TwoMLPHead(
            ours.backbone.out_channels * roi_cfg.pooled_size**2, roi_cfg.representation_size
        ),
        box_predictor=FastRCNNPredictor(roi_cfg.representation_size, roi_cfg.num_classes),
        min_size=min_size,
        max_size=max_size,
        image_mean=ours.first_stage.pixel_mean.flatten().tolist(),
        image_std=ours.first_stage.pixel_std.flatten().tolist(),
        rpn_anchor_generator=TVAnchorGenerator(
            tuple(lv.sizes for lv in levels), tuple(lv.ratios for lv in levels)
        ),
        rpn_head=TVRPNHead(ours.backbone.out_channels, levels[0].num_anchors),
        rpn_pre_nms_top_n_train=rpn_cfg.train_proposals.pre_nms_top_n,
        rpn_pre_nms_top_n_test=rpn_cfg.test_proposals.pre_nms_top_n,
        rpn_post_nms_top_n_train=rpn_cfg.train_proposals.post_nms_top_n,
        rpn_post_nms_top_n_test=rpn_cfg.test_proposals.post_nms_top_n,
        rpn_nms_thresh=rpn_cfg.test_proposals.nms_threshold,
        rpn_fg_iou_thresh=rpn_cfg.fg_iou_threshold,
        rpn_bg_iou_thresh=rpn_cfg.bg_iou_threshold,
        rpn_batch_size_per_image=rpn_cfg.batch_size_per_image,
        rpn_positive_fraction=rpn_cfg.positive_fraction,
        box_roi_pool=MultiScaleRoIAlign(names, roi_cfg.pooled_size, roi_cfg.sampling_ratio),
        box_score_thresh=roi_cfg.score_threshold,
        box_nms_thresh=roi_cfg.nms_threshold,
        box_detections_per_img=roi_cfg.detections_per_image,
        box_fg_iou_thresh=roi_cfg.fg_iou,
        box_bg_iou_thresh=roi_cfg.bg_iou[1],
        box_batch_size_per_image=roi_cfg.rois_per_image,
        box_positive_fraction=roi_cfg.positive_fraction,
    )
    copy_rpn_head_to_torchvision(ours.rpn.head, tv.rpn.head)
    head, tv_head, tv_pred = (
        ours.roi_heads.box_head,
        tv.roi_heads.box_head,
        tv.roi_heads.box_predictor,
    )
    with torch.no_grad():
        for a, b in (
            (head.fc6, tv_head.fc6),
            (head.fc7, tv_head.fc7),
            (head.cls_score, tv_pred.cls_score),
            (head.bbox_pred, tv_pred.bbox_pred),
        ):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    return tv
