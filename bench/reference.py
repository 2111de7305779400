"""torchvision's Faster R-CNN built to match an rpnkit FasterRCNN, for benchmarks only.

``torchvision_faster_rcnn(ours)`` returns torchvision's own ``FasterRCNN`` (its transform, RPN,
RoIHeads and postprocessing) around a copy of rpnkit's backbone, with the same anchors and
settings and the RPN head and box head weights copied from rpnkit's model. Both then compute
the same function; what differs is how.

``TorchvisionDetector`` puts that model behind rpnkit's interface (padded batch, GroundTruth,
an output with ``.losses`` and ``.detections``), so that the same training loop and evaluation
run both. It turns torchvision's resizing off: the images come resized by rpnkit's dataset.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from types import SimpleNamespace

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.ops import MultiScaleRoIAlign

from rpnkit.roi_heads import Detections
from rpnkit.testing import copy_rpn_head_to_torchvision


class BackboneAdapter(nn.Module):
    """rpnkit's backbone (a list of maps) as torchvision wants it (an OrderedDict)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.out_channels = body.out_channels

    def forward(self, x):
        return OrderedDict((str(i), f) for i, f in enumerate(self.body(x)))


def torchvision_faster_rcnn(ours, *, min_size: int = 800, max_size: int = 1333) -> TVFasterRCNN:
    """torchvision's FasterRCNN equal to ``ours`` (an rpnkit FasterRCNN) in weights and
    settings, on a deep copy of its backbone."""
    rpn_cfg, roi_cfg = ours.rpn.config, ours.roi_heads.config
    levels = rpn_cfg.anchors.levels
    names = [str(i) for i in range(ours.pooled_levels)]
    tv = TVFasterRCNN(
        BackboneAdapter(copy.deepcopy(ours.backbone)),
        num_classes=roi_cfg.num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=ours.pixel_mean.flatten().tolist(),
        image_std=ours.pixel_std.flatten().tolist(),
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


class TorchvisionDetector(nn.Module):
    """torchvision's FasterRCNN behind rpnkit's model interface (reference only)."""

    def __init__(self, ours) -> None:
        super().__init__()
        self.model = torchvision_faster_rcnn(ours)
        self.model.transform.resize = lambda image, target=None: (image, target)  # pre-resized

    @property
    def roi_heads(self):  # rpnkit's loop names the loss terms by this
        return self.model.roi_heads

    def forward(self, images, image_sizes, targets=None, *, image_scales=None):
        sizes = image_sizes.tolist()
        crops = [img[:, :h, :w] for img, (h, w) in zip(images, sizes)]
        if self.training and targets is not None:
            keep = targets.mask & ~targets.ignore  # torchvision has no ignore regions
            tv_targets = [
                {"boxes": targets.boxes[i][keep[i]], "labels": targets.labels[i][keep[i]]}
                for i in range(len(keep))
            ]
            losses = self.model(crops, tv_targets)
            renamed = {
                "loss_objectness": losses["loss_objectness"],
                "loss_rpn_box": losses["loss_rpn_box_reg"],
                "loss_classifier": losses["loss_classifier"],
                "loss_box_reg": losses["loss_box_reg"],
            }
            return SimpleNamespace(losses=renamed, detections=None, proposals=None)
        found = self.model(crops)
        d = max(1, max(len(f["boxes"]) for f in found))
        boxes = images.new_zeros((len(found), d, 4))
        scores = images.new_zeros((len(found), d))
        labels = torch.zeros((len(found), d), dtype=torch.int64, device=images.device)
        for i, f in enumerate(found):  # reference model: a loop is fine here
            n = len(f["boxes"])
            boxes[i, :n], scores[i, :n], labels[i, :n] = f["boxes"], f["scores"], f["labels"]
        num = torch.tensor([len(f["boxes"]) for f in found], device=images.device)
        return SimpleNamespace(
            losses={}, detections=Detections(boxes, scores, labels, num), proposals=None
        )
